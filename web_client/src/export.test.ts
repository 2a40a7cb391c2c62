import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import { ApiError } from './api';
import { exportErrorText, exportQuery, findRenderJob, loopRange, type ExportChoice } from './export';
import { setLoop } from './transport';

const WAV: ExportChoice = { format: 'wav', stems: false, range: null };

function addRender(doc: Y.Doc, id: string, fields: Record<string, unknown>): void {
  doc.getMap('jobs').set(id, new Y.Map(Object.entries({ kind: 'render', format: 'wav', stems: false, ...fields })));
}

describe('export query', () => {
  it('names the format, the range and stems', () => {
    expect(exportQuery(WAV)).toBe('format=wav');
    expect(exportQuery({ format: 'mp3', stems: true, range: [1.5, 9.25] })).toBe('format=mp3&start=1.500&end=9.250&stems=1');
  });
});

describe('loop range', () => {
  it('is the active loop, else the one remembered while looping is off, else none', () => {
    const doc = new Y.Doc();
    expect(loopRange(doc)).toBeNull();
    setLoop(doc, [2, 6]);
    expect(loopRange(doc)).toEqual([2, 6]);
    setLoop(doc, null);
    expect(loopRange(doc)).toEqual([2, 6]);
  });
});

describe('render job progress', () => {
  it('follows the newest matching render that started after the request', () => {
    const doc = new Y.Doc();
    addRender(doc, 'old', { status: 'running', progress: 0.9, startedAt: 1_000 });
    addRender(doc, 'flac', { format: 'flac', status: 'running', progress: 0.5, startedAt: 10_000 });
    addRender(doc, 'stems', { stems: true, status: 'running', progress: 0.5, startedAt: 10_000 });
    doc.getMap('jobs').set('ai', new Y.Map(Object.entries({ kind: 'separate', status: 'running', progress: 0.2 })));
    expect(findRenderJob(doc, WAV, 10_000)).toBeNull();
    addRender(doc, 'mine', { status: 'queued', progress: 0, startedAt: 10_500 });
    expect(findRenderJob(doc, WAV, 10_000)).toEqual({ status: 'queued', progress: null });
    addRender(doc, 'mine', { status: 'running', progress: 0.426, startedAt: 10_500 });
    expect(findRenderJob(doc, WAV, 10_000)).toEqual({ status: 'running', progress: 0.426 });
    addRender(doc, 'mine', { status: 'running', progress: 7, startedAt: 10_500 });
    expect(findRenderJob(doc, WAV, 10_000)?.progress).toBe(1);
    expect(findRenderJob(doc, { format: 'flac', stems: false, range: null }, 10_000)).toEqual({ status: 'running', progress: 0.5 });
  });
});

describe('export errors in plain words', () => {
  it('explains what the musician can do', () => {
    expect(exportErrorText(new ApiError(422, 'empty_range', 'nothing to render'), 'wav')).toMatch(/nothing to export/);
    expect(exportErrorText(new ApiError(422, 'unsupported_format', 'x'), 'mp3')).toBe('This server cannot make MP3 files. Choose WAV or FLAC instead.');
    expect(exportErrorText(new ApiError(422, 'range_too_long', 'the range is 900.0 s long'), 'wav')).toMatch(/loop range only.*900\.0 s/);
    expect(exportErrorText(new ApiError(401, 'invalid_token', 'x'), 'wav')).toMatch(/signed out/);
    expect(exportErrorText(new ApiError(500, 'internal_error', 'x'), 'wav')).toMatch(/could not render/);
    expect(exportErrorText(new TypeError('Failed to fetch'), 'wav')).toMatch(/connection dropped/);
    expect(exportErrorText(new ApiError(403, 'forbidden', 'Some server words.'), 'wav')).toBe('Some server words.');
  });
});
