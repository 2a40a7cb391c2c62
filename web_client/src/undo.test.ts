import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import { readBpm, readClips } from './daw';
import { moveClips, reorderTrack } from './edits';
import { readTransport, setBpm, setLoop, setTransport } from './transport';
import { addTrack, readTracks, renameTrack } from './tracks';
import { asOneStep, beginGroup, createUndoManager, endGroup } from './undo';

/** Two replicas wired like two browsers: every update goes to the other with a "remote" origin. */
function pair(): [Y.Doc, Y.Doc] {
  const a = new Y.Doc();
  const b = new Y.Doc();
  a.on('update', (u: Uint8Array, origin: unknown) => {
    if (origin !== 'remote') Y.applyUpdate(b, u, 'remote');
  });
  b.on('update', (u: Uint8Array, origin: unknown) => {
    if (origin !== 'remote') Y.applyUpdate(a, u, 'remote');
  });
  return [a, b];
}

describe('undo scope', () => {
  it("undoes only one's own edits, never a collaborator's", () => {
    const [a, b] = pair();
    const umA = createUndoManager(a);
    const umB = createUndoManager(b);
    asOneStep(umA, () => addTrack(a, 'ta'));
    asOneStep(umB, () => addTrack(b, 'tb'));
    asOneStep(umB, () => setBpm(b, 90));
    asOneStep(umA, () => renameTrack(a, 'ta', 'Drums'));
    expect(umA.undoStack.length).toBe(2);
    expect(umB.undoStack.length).toBe(2);
    umA.undo(); // A's rename
    expect(readTracks(b).map((t) => [t.id, t.name])).toEqual([
      ['ta', 'Track 1'],
      ['tb', 'Track 2'],
    ]);
    expect(readBpm(b)).toBe(90);
    umA.undo(); // A's track; B's track and tempo stay
    expect(readTracks(b).map((t) => t.id)).toEqual(['tb']);
    expect(readTracks(a).map((t) => t.id)).toEqual(['tb']);
    expect(readBpm(a)).toBe(90);
    expect(umA.canUndo()).toBe(false);
    umA.redo();
    expect(readTracks(b).map((t) => t.id)).toEqual(['ta', 'tb']);
    umB.undo(); // B's tempo; A's track stays
    expect(readBpm(a)).toBe(120);
    expect(readTracks(a).map((t) => t.id)).toEqual(['ta', 'tb']);
  });

  it('undoes a whole gesture at once, and separates quick gestures', () => {
    const doc = new Y.Doc();
    const um = createUndoManager(doc);
    asOneStep(um, () => addTrack(doc, 't1'));
    asOneStep(um, () => addTrack(doc, 't2'));
    asOneStep(um, () => reorderTrack(doc, 't2', 0));
    expect(readTracks(doc).map((t) => t.id)).toEqual(['t2', 't1']);
    um.undo();
    expect(readTracks(doc).map((t) => t.id)).toEqual(['t1', 't2']);
    um.undo();
    expect(readTracks(doc).map((t) => t.id)).toEqual(['t1']);
  });

  it('undoes a cross-track clip move as one step', () => {
    const doc = new Y.Doc();
    addTrack(doc, 't1');
    addTrack(doc, 't2');
    (doc.getMap<Y.Map<unknown>>('tracks').get('t1')?.get('clips') as Y.Map<unknown>).set(
      'c1',
      new Y.Map<unknown>([
        ['assetId', 'a'],
        ['start', 1],
        ['offset', 0],
        ['length', 2],
      ]),
    );
    const um = createUndoManager(doc);
    asOneStep(um, () => moveClips(doc, [{ trackId: 't1', clipId: 'c1', toTrack: 't2', start: 4 }]));
    expect(readClips(doc, 't2').map((c) => c.start)).toEqual([4]);
    um.undo();
    expect(readClips(doc, 't1').map((c) => c.start)).toEqual([1]);
    expect(readClips(doc, 't2')).toEqual([]);
  });

  it('tracks tempo and loop edits but never transport moves', () => {
    const doc = new Y.Doc();
    const um = createUndoManager(doc);
    setTransport(doc, true, 1000);
    expect(um.canUndo()).toBe(false);
    asOneStep(um, () => setBpm(doc, 90));
    asOneStep(um, () => setLoop(doc, [2, 4], 1500));
    setTransport(doc, false, 2000);
    um.undo();
    expect(readTransport(doc).loop).toBeNull();
    expect(readTransport(doc).playing).toBe(false); // the stop stays
    um.undo();
    expect(readBpm(doc)).toBe(120);
    expect(um.canUndo()).toBe(false);
  });

  it('ignores changes that arrive from the network', () => {
    const [a, b] = pair();
    const umA = createUndoManager(a);
    addTrack(b, 'tb');
    setBpm(b, 100);
    expect(umA.canUndo()).toBe(false);
    expect(readBpm(a)).toBe(100);
  });
});

describe('continuous gestures', () => {
  it('groups everything between begin and end into one step, however slow', () => {
    const doc = new Y.Doc();
    addTrack(doc, 't1');
    const um = createUndoManager(doc);
    let now = 0;
    const realNow = Date.now;
    Date.now = () => now; // the manager merges by wall-clock time
    try {
      beginGroup(um);
      for (const name of ['D', 'Dr', 'Dru', 'Drum', 'Drums']) {
        now += 2000; // a slow typist
        renameTrack(doc, 't1', name);
      }
      endGroup(um);
      now += 10;
      renameTrack(doc, 't1', 'Drums 2');
    } finally {
      Date.now = realNow;
    }
    expect(um.undoStack.length).toBe(2);
    um.undo();
    expect(readTracks(doc)[0]?.name).toBe('Drums');
    um.undo();
    expect(readTracks(doc)[0]?.name).toBe('Track 1');
  });
});
