import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import { ApiClient, ApiError } from './api';
import { friendlyJobError, jobActivity, jobUi, pianoRoll, readJobs, readNotes, startErrorMessage, startJob } from './jobs';

describe('job status → UI state', () => {
  it('maps each status', () => {
    expect(jobUi({ kind: 'separate', status: 'queued', progress: 0, error: null })).toMatchObject({ progress: null, cancellable: true, tone: 'busy' });
    expect(jobUi({ kind: 'separate', status: 'running', progress: 0.426, error: null })).toMatchObject({
      label: 'Separating… 42%',
      progress: 0.426,
      cancellable: true,
    });
    expect(jobUi({ kind: 'master', status: 'done', progress: 1, error: null })).toMatchObject({ progress: 1, cancellable: false, tone: 'ok' });
    expect(jobUi({ kind: 'transcribe', status: 'cancelled', progress: 0.3, error: null })).toMatchObject({ label: 'Cancelled', cancellable: false });
    const failed = jobUi({ kind: 'separate', status: 'failed', progress: 0.1, error: "model 'htdemucs' is not installed: run `escenario models fetch htdemucs`" });
    expect(failed.tone).toBe('error');
    expect(failed.error).toBe("Stem separation isn't installed on this server — an admin can run `escenario models fetch htdemucs`.");
  });

  it('says what presence shows', () => {
    expect(jobActivity('separate')).toBe('separating…');
    expect(jobActivity('transcribe')).toBe('transcribing…');
  });
});

describe('error wording', () => {
  it('names the install command for a missing model', () => {
    expect(friendlyJobError('separate', 'model_not_installed', 'no model htdemucs; run escenario models import PATH')).toBe(
      "Stem separation isn't installed on this server — an admin can run `escenario models import PATH`.",
    );
    expect(friendlyJobError('separate', 'model_not_installed', '')).toContain('`escenario models import …`');
  });

  it('turns crashes, viewers and gone assets into plain words', () => {
    expect(friendlyJobError('separate', null, 'worker crashed (exit code -9: SIGKILL; the system may have run out of memory)')).toMatch(/ran out of memory/);
    expect(friendlyJobError('master', 'role_forbidden', 'x')).toMatch(/viewer/);
    expect(friendlyJobError('master', 'asset_not_found', 'x')).toMatch(/deleted/);
    expect(friendlyJobError('transcribe', 'not_audio', 'x')).toBe('Audio-to-MIDI needs an audio clip, not a MIDI one.');
    expect(friendlyJobError('master', null, 'boom')).toBe('Mastering failed: boom');
    expect(friendlyJobError('master', 'no_inference_workers', 'this server runs no inference workers')).toMatch(/no AI workers.*escenario worker/);
    expect(startErrorMessage('separate', new ApiError(422, 'model_not_installed', 'run escenario models fetch htdemucs'))).toContain(
      'escenario models fetch htdemucs',
    );
    expect(startErrorMessage('master', new TypeError('fetch failed'))).toMatch(/Cannot reach the server/);
  });
});

describe('reading jobs and notes from the document', () => {
  it('keeps inference jobs only, newest first, and validates fields', () => {
    const doc = new Y.Doc();
    const jobs = doc.getMap('jobs');
    jobs.set('render-1', { kind: 'render', status: 'running', progress: 0.5 });
    jobs.set('a', { kind: 'master', status: 'done', progress: 0.9, createdAt: 1, tracks: ['t1', 5] });
    const m = new Y.Map<unknown>();
    jobs.set('b', m);
    m.set('kind', 'separate');
    m.set('status', 'running');
    m.set('progress', 7);
    m.set('createdAt', 2);
    jobs.set('c', { kind: 'transcribe', status: 'weird', progress: 'x' });
    const out = readJobs(doc);
    expect(out.map((j) => j.id)).toEqual(['b', 'a', 'c']);
    expect(out[0]).toMatchObject({ kind: 'separate', status: 'running', progress: 1 });
    expect(out[1]).toMatchObject({ status: 'done', progress: 1, tracks: ['t1'] });
    expect(out[2]).toMatchObject({ status: 'queued', progress: 0 });
  });

  it('reads notes and lays out a mini piano roll inside the clip window', () => {
    const arr = new Y.Array<unknown>();
    const doc = new Y.Doc();
    doc.getMap('x').set('notes', arr);
    arr.push([
      { pitch: 60, start: 0, duration: 1, velocity: 90 },
      { pitch: 72, start: 1.5, duration: 1, velocity: 90 },
      { pitch: 200, start: 0, duration: 1 },
      { pitch: 64, start: 9, duration: 1 },
      'junk',
    ]);
    const notes = readNotes(arr);
    expect(notes).toHaveLength(3);
    const rects = pianoRoll(notes, 0.5, 2, 200, 48);
    expect(rects).toHaveLength(2); // the note at 9 s is outside the window
    expect(rects[0]).toMatchObject({ x: 0, w: 50 }); // 0.5–1.0 of a 2 s window
    expect(rects[1]!.x).toBe(100);
    expect(rects[1]!.w).toBe(100); // clipped at the window's end (2.5 s)
    expect(rects[1]!.y).toBeLessThan(rects[0]!.y); // higher pitch is drawn higher
  });
});

describe('startJob', () => {
  it('posts to the asset with the clip and returns the job id', async () => {
    const calls: [string, RequestInit | undefined][] = [];
    const api = new ApiClient({ get: () => 'tok', set: () => undefined }, '/api', async (input, init) => {
      calls.push([input, init]);
      return new Response(JSON.stringify({ job_id: 'j1', status: 'queued' }), { status: 202 });
    });
    expect(await startJob(api, 'master', 'a 1', { clipId: 'c', trackId: 't' })).toBe('j1');
    expect(calls[0]![0]).toBe('/api/assets/a%201/master');
    expect(JSON.parse(String(calls[0]![1]!.body))).toEqual({ clip_id: 'c', track_id: 't' });
  });

  it('raises the server error so it can be worded', async () => {
    const api = new ApiClient({ get: () => 'tok', set: () => undefined }, '/api', async () =>
      new Response(JSON.stringify({ error: { code: 'model_not_installed', message: 'run `escenario models import PATH`' } }), { status: 422 }),
    );
    await expect(startJob(api, 'separate', 'a')).rejects.toMatchObject({ code: 'model_not_installed' });
  });
});
