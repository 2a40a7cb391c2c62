import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import { addTrackWithClip, readClips } from './daw';
import { deleteClips, duplicateClips, moveClips, reorderTrack, setClipGeometry, setTrackColor } from './edits';
import { LOCAL_ORIGIN } from './origins';
import { addTrack, PALETTE, readTracks, trackOrder, tracksMap } from './tracks';

function sync(a: Y.Doc, b: Y.Doc): void {
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)));
  Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)));
}

function countTransactions(doc: Y.Doc): { n: number; origins: unknown[] } {
  const seen = { n: 0, origins: [] as unknown[] };
  doc.on('afterTransaction', (tr: Y.Transaction) => {
    seen.n += 1;
    seen.origins.push(tr.origin);
  });
  return seen;
}

function session(): Y.Doc {
  const doc = new Y.Doc();
  addTrackWithClip(doc, { assetId: 'a1', name: 'Drums.wav', duration: 2 }, { track: 't1', clip: 'c1' });
  addTrack(doc, 't2');
  return doc;
}

describe('clip edits', () => {
  it('moves a clip within its track in one local transaction', () => {
    const doc = session();
    const seen = countTransactions(doc);
    expect(moveClips(doc, [{ trackId: 't1', clipId: 'c1', toTrack: 't1', start: 1.5 }])).toEqual([{ trackId: 't1', clipId: 'c1' }]);
    expect(seen).toEqual({ n: 1, origins: [LOCAL_ORIGIN] });
    expect(readClips(doc, 't1')).toEqual([{ id: 'c1', assetId: 'a1', start: 1.5, offset: 0, length: 2 }]);
  });

  it('moves a clip to another track keeping its id and every field', () => {
    const doc = session();
    const clip = tracksMap(doc).get('t1')?.get('clips') as Y.Map<Y.Map<unknown>>;
    clip.get('c1')?.set('fadeIn', 0.1);
    const seen = countTransactions(doc);
    expect(moveClips(doc, [{ trackId: 't1', clipId: 'c1', toTrack: 't2', start: 3 }])).toEqual([{ trackId: 't2', clipId: 'c1' }]);
    expect(seen.n).toBe(1);
    expect(readClips(doc, 't1')).toEqual([]);
    expect(readClips(doc, 't2')).toEqual([{ id: 'c1', assetId: 'a1', start: 3, offset: 0, length: 2 }]);
    const moved = (tracksMap(doc).get('t2')?.get('clips') as Y.Map<Y.Map<unknown>>).get('c1');
    expect(moved?.toJSON()).toMatchObject({ gainDb: 0, fadeIn: 0.1, fadeOut: 0 });
  });

  it('edits a clip written as a plain object by turning it into a map', () => {
    const doc = new Y.Doc();
    addTrack(doc, 't1');
    const clips = tracksMap(doc).get('t1')?.get('clips') as Y.Map<unknown>;
    clips.set('c9', { assetId: 'a', start: 1, offset: 0, length: 1 });
    expect(setClipGeometry(doc, { trackId: 't1', clipId: 'c9' }, { start: 2, offset: 0.5, length: 0.5 })).toBe(true);
    expect(clips.get('c9')).toBeInstanceOf(Y.Map);
    expect(readClips(doc, 't1')).toEqual([{ id: 'c9', assetId: 'a', start: 2, offset: 0.5, length: 0.5 }]);
  });

  it('ignores clips that are gone (deleted by someone else meanwhile)', () => {
    const doc = session();
    expect(moveClips(doc, [{ trackId: 't1', clipId: 'nope', toTrack: 't2', start: 0 }])).toEqual([]);
    expect(setClipGeometry(doc, { trackId: 't9', clipId: 'c1' }, { start: 0, offset: 0, length: 1 })).toBe(false);
  });

  it('deletes and duplicates selections in one transaction each', () => {
    const doc = session();
    const seen = countTransactions(doc);
    const copies = duplicateClips(doc, [{ trackId: 't1', clipId: 'c1', start: 2, newId: 'c2' }]);
    expect(copies).toEqual([{ trackId: 't1', clipId: 'c2' }]);
    expect(readClips(doc, 't1').map((c) => [c.id, c.start, c.length])).toEqual([
      ['c1', 0, 2],
      ['c2', 2, 2],
    ]);
    expect(deleteClips(doc, [{ trackId: 't1', clipId: 'c1' }, { trackId: 't1', clipId: 'c2' }, { trackId: 't1', clipId: 'x' }])).toBe(2);
    expect(readClips(doc, 't1')).toEqual([]);
    expect(seen.n).toBe(2);
  });
});

describe('track edits', () => {
  it('sets palette or hex colours and refuses anything else', () => {
    const doc = session();
    expect(setTrackColor(doc, 't1', PALETTE[3]!)).toBe(true);
    expect(readTracks(doc)[0]?.color).toBe(PALETTE[3]);
    expect(setTrackColor(doc, 't1', '#123abc')).toBe(true);
    expect(setTrackColor(doc, 't1', 'red; background: url(x)')).toBe(false);
    expect(setTrackColor(doc, 'nope', '#123abc')).toBe(false);
    expect(readTracks(doc)[0]?.color).toBe('#123abc');
  });

  it('reorders by moving one id when the stored order is clean', () => {
    const doc = new Y.Doc();
    for (const id of ['a', 'b', 'c', 'd']) addTrack(doc, id);
    const seen = countTransactions(doc);
    expect(reorderTrack(doc, 'a', 2)).toBe(true);
    expect(trackOrder(doc).toArray()).toEqual(['b', 'c', 'a', 'd']);
    expect(seen.n).toBe(1);
    expect(reorderTrack(doc, 'a', 2)).toBe(true); // already there: no transaction
    expect(seen.n).toBe(1);
    expect(reorderTrack(doc, 'zz', 0)).toBe(false);
  });

  it('merges concurrent reorders of different tracks', () => {
    const a = new Y.Doc();
    for (const id of ['t1', 't2', 't3', 't4']) addTrack(a, id);
    const b = new Y.Doc();
    sync(a, b);
    reorderTrack(a, 't1', 3); // t2 t3 t4 t1
    reorderTrack(b, 't4', 0); // t4 t1 t2 t3
    sync(a, b);
    const ids = (d: Y.Doc): string[] => readTracks(d).map((t) => t.id);
    expect(ids(a)).toEqual(ids(b));
    expect(ids(a).indexOf('t4')).toBeLessThan(ids(a).indexOf('t2'));
    expect(ids(a).at(-1)).toBe('t1');
    expect(trackOrder(a).length).toBe(4);
  });

  it('cleans up duplicates left by concurrent moves of the same track', () => {
    const a = new Y.Doc();
    for (const id of ['t1', 't2', 't3']) addTrack(a, id);
    const b = new Y.Doc();
    sync(a, b);
    reorderTrack(a, 't1', 2);
    reorderTrack(b, 't1', 1);
    sync(a, b);
    expect(trackOrder(a).length).toBe(4); // t1 twice: the first one counts
    expect(readTracks(a).map((t) => t.id)).toEqual(readTracks(b).map((t) => t.id));
    reorderTrack(a, 't3', 0);
    expect(trackOrder(a).toArray()).toEqual(readTracks(a).map((t) => t.id));
    expect(trackOrder(a).toArray()[0]).toBe('t3');
  });
});
