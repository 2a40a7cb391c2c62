import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import { LOCAL_ORIGIN, TRANSPORT_ORIGIN } from './origins';
import {
  defaultLoop,
  normalizeRange,
  parseBpm,
  parseRange,
  parseTimeSignature,
  readLastLoop,
  readTransport,
  seek,
  setBpm,
  setLoop,
  setTimeSignature,
  setTransport,
  toggleLoop,
  transportPosition,
  wrapLoop,
} from './transport';
import { sessionMap } from './tracks';

function origins(doc: Y.Doc): unknown[] {
  const seen: unknown[] = [];
  doc.on('afterTransaction', (tr: Y.Transaction) => seen.push(tr.origin));
  return seen;
}

describe('loop wrap (as the server preview clock)', () => {
  it('wraps a playhead at or past the loop end into the loop', () => {
    expect(wrapLoop(3, [4, 8])).toBe(3); // before the loop: plays through to it
    expect(wrapLoop(7.5, [4, 8])).toBe(7.5);
    expect(wrapLoop(8, [4, 8])).toBe(4);
    expect(wrapLoop(9, [4, 8])).toBe(5);
    expect(wrapLoop(30, [4, 8])).toBe(6);
    expect(wrapLoop(30, null)).toBe(30);
  });

  it('applies the loop to the running transport', () => {
    const t = { playing: true, startedAt: 1000, position: 3, loop: [4, 8] as const };
    expect(transportPosition(t, 2000)).toBe(4);
    expect(transportPosition(t, 7000)).toBe(5);
    expect(transportPosition({ ...t, playing: false }, 7000)).toBe(3);
  });

  it('reads only valid ranges', () => {
    expect(parseRange([1, 2])).toEqual([1, 2]);
    expect(parseRange([2, 1])).toBeNull();
    expect(parseRange([-1, 2])).toBeNull();
    expect(parseRange([1, 'x'])).toBeNull();
    expect(parseRange([1, 2, 3])).toBeNull();
    expect(parseRange(null)).toBeNull();
    const doc = new Y.Doc();
    doc.getMap('m').set('loop', Y.Array.from([1, 2]));
    expect(parseRange(doc.getMap('m').get('loop'))).toEqual([1, 2]);
  });
});

describe('transport writes', () => {
  it('seeks without changing play state, as a transport move', () => {
    const doc = new Y.Doc();
    const seen = origins(doc);
    setTransport(doc, true, 1000);
    seek(doc, 12.3456, 5000);
    expect(readTransport(doc)).toEqual({ playing: true, startedAt: 5000, position: 12.346, loop: null });
    expect(transportPosition(readTransport(doc), 6000)).toBeCloseTo(13.346, 6);
    seek(doc, -3, 7000);
    expect(readTransport(doc).position).toBe(0);
    expect(seen).toEqual([TRANSPORT_ORIGIN, TRANSPORT_ORIGIN, TRANSPORT_ORIGIN]);
  });

  it('sets, clears and toggles the loop, remembering the last range', () => {
    const doc = new Y.Doc();
    const seen = origins(doc);
    setLoop(doc, [2, 6]);
    expect(readTransport(doc).loop).toEqual([2, 6]);
    expect(toggleLoop(doc, [0, 8])).toBe(false);
    expect(readTransport(doc).loop).toBeNull();
    expect(readLastLoop(doc)).toEqual([2, 6]);
    expect(toggleLoop(doc, [0, 8])).toBe(true);
    expect(readTransport(doc).loop).toEqual([2, 6]);
    expect(seen).toEqual([LOCAL_ORIGIN, LOCAL_ORIGIN, LOCAL_ORIGIN]);
    // never set: the fallback
    const fresh = new Y.Doc();
    toggleLoop(fresh, [0, 8]);
    expect(readTransport(fresh).loop).toEqual([0, 8]);
  });

  it('re-anchors a playing transport when the loop goes off, so the playhead does not jump', () => {
    const doc = new Y.Doc();
    setTransport(doc, true, 1000);
    setLoop(doc, [0, 2], 1000);
    expect(transportPosition(readTransport(doc), 6000)).toBe(1); // 5 s into a 2 s loop
    const seen = origins(doc);
    setLoop(doc, null, 6000);
    expect(seen).toEqual([TRANSPORT_ORIGIN, LOCAL_ORIGIN]);
    expect(transportPosition(readTransport(doc), 6500)).toBeCloseTo(1.5, 6);
  });

  it('normalises dragged ranges', () => {
    expect(normalizeRange(6, 2)).toEqual([2, 6]);
    expect(normalizeRange(-1, 2)).toEqual([0, 2]);
    expect(normalizeRange(2, 2.01)).toBeNull();
  });

  it('offers four bars from the current bar as the first loop', () => {
    expect(defaultLoop(0, 120, [4, 4])).toEqual([0, 8]);
    expect(defaultLoop(9, 120, [4, 4])).toEqual([8, 16]);
    expect(defaultLoop(0, 120, [3, 4], 2)).toEqual([0, 3]);
  });
});

describe('tempo and metre', () => {
  it('parses a typed tempo', () => {
    expect(parseBpm('128')).toBe(128);
    expect(parseBpm(' 97,5 ')).toBe(97.5);
    expect(parseBpm('19')).toBeNull();
    expect(parseBpm('1000')).toBeNull();
    expect(parseBpm('12a')).toBeNull();
    expect(parseBpm('')).toBeNull();
  });

  it('writes bpm as an undoable edit, refusing nonsense', () => {
    const doc = new Y.Doc();
    const seen = origins(doc);
    expect(setBpm(doc, 90)).toBe(true);
    expect(sessionMap(doc).get('bpm')).toBe(90);
    expect(setBpm(doc, 90)).toBe(true); // unchanged: no transaction
    expect(setBpm(doc, Number.NaN)).toBe(false);
    expect(setBpm(doc, 5)).toBe(false);
    expect(seen).toEqual([LOCAL_ORIGIN]);
  });

  it('validates and writes the time signature as [beats, unit]', () => {
    expect(parseTimeSignature('7', '8')).toEqual([7, 8]);
    expect(parseTimeSignature(3, 4)).toEqual([3, 4]);
    expect(parseTimeSignature('0', '4')).toBeNull();
    expect(parseTimeSignature('33', '4')).toBeNull();
    expect(parseTimeSignature('4', '3')).toBeNull();
    expect(parseTimeSignature('4.5', '4')).toBeNull();
    const doc = new Y.Doc();
    expect(setTimeSignature(doc, [6, 8])).toBe(true);
    expect(sessionMap(doc).get('timeSignature')).toEqual([6, 8]);
    expect(setTimeSignature(doc, [6, 5])).toBe(false);
  });
});
