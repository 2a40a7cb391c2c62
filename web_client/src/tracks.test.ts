import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import {
  addTrack,
  deleteTrack,
  docTitle,
  MAX_TRACK_NAME,
  nextTrackName,
  PALETTE,
  paletteColor,
  readTracks,
  renameTrack,
  sanitizeTrackName,
  sessionMap,
  trackOrder,
  tracksMap,
} from './tracks';

function sync(a: Y.Doc, b: Y.Doc): void {
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)));
  Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)));
}

describe('track name helpers', () => {
  it('numbers new tracks after the existing ones, skipping names in use', () => {
    expect(nextTrackName([])).toBe('Track 1');
    expect(nextTrackName(['Drums', 'Bass'])).toBe('Track 3');
    expect(nextTrackName(['Track 2'])).toBe('Track 3');
    expect(nextTrackName(['x', 'track 3', 'Track 4'])).toBe('Track 5');
  });

  it('strips control characters, keeps spaces while typing, caps the length', () => {
    expect(sanitizeTrackName('Lead\nVox\t')).toBe('LeadVox');
    expect(sanitizeTrackName('Lead ')).toBe('Lead ');
    expect(sanitizeTrackName('é'.repeat(MAX_TRACK_NAME + 20))).toHaveLength(MAX_TRACK_NAME);
    expect(Array.from(sanitizeTrackName('🎸'.repeat(MAX_TRACK_NAME + 1)))).toHaveLength(MAX_TRACK_NAME);
  });

  it('cycles the palette', () => {
    expect(paletteColor(0)).toBe(PALETTE[0]);
    expect(paletteColor(PALETTE.length + 1)).toBe(PALETTE[1]);
    expect(paletteColor(-1)).toBe(PALETTE[PALETTE.length - 1]);
  });
});

describe('session document', () => {
  it('adds a track with the schema fields in one transaction', () => {
    const doc = new Y.Doc();
    let transactions = 0;
    doc.on('afterTransaction', () => (transactions += 1));
    const id = addTrack(doc, 'track-a');
    expect(transactions).toBe(1);
    expect(trackOrder(doc).toArray()).toEqual(['track-a']);
    const t = tracksMap(doc).get(id);
    expect(t).toBeInstanceOf(Y.Map);
    expect(t?.get('name')).toBe('Track 1');
    expect(t?.get('kind')).toBe('audio');
    expect(t?.get('gainDb')).toBe(0);
    expect(t?.get('pan')).toBe(0);
    expect(t?.get('mute')).toBe(false);
    expect(t?.get('solo')).toBe(false);
    expect(t?.get('color')).toBe(PALETTE[0]);
    expect(t?.get('clips')).toBeInstanceOf(Y.Map);
    expect(readTracks(doc)[0]).toMatchObject({ id: 'track-a', name: 'Track 1', clipCount: 0 });
  });

  it('generates a UUID when no id is given', () => {
    const doc = new Y.Doc();
    expect(addTrack(doc)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('orders by trackOrder, ignoring duplicates and dangling ids, then unlisted tracks by id', () => {
    const doc = new Y.Doc();
    addTrack(doc, 'b');
    addTrack(doc, 'a');
    addTrack(doc, 'c');
    doc.transact(() => {
      const order = trackOrder(doc);
      order.delete(0, order.length);
      order.push(['c', 'ghost', 'c', 'b']);
    });
    expect(readTracks(doc).map((t) => t.id)).toEqual(['c', 'b', 'a']);
  });

  it('renames and deletes tracks', () => {
    const doc = new Y.Doc();
    addTrack(doc, 'a');
    addTrack(doc, 'b');
    expect(renameTrack(doc, 'a', 'Drums\n')).toBe(true);
    expect(renameTrack(doc, 'missing', 'x')).toBe(false);
    expect(readTracks(doc).map((t) => t.name)).toEqual(['Drums', 'Track 2']);
    deleteTrack(doc, 'a');
    expect(trackOrder(doc).toArray()).toEqual(['b']);
    expect(tracksMap(doc).has('a')).toBe(false);
  });

  it('merges concurrent edits from two replicas', () => {
    const alice = new Y.Doc();
    const bob = new Y.Doc();
    addTrack(alice, 'a1');
    sync(alice, bob);
    addTrack(bob, 'b1');
    renameTrack(alice, 'a1', 'Guitar');
    addTrack(alice, 'a2');
    sync(alice, bob);
    const ids = readTracks(alice).map((t) => t.id);
    expect(readTracks(bob).map((t) => t.id)).toEqual(ids);
    expect(new Set(ids)).toEqual(new Set(['a1', 'a2', 'b1']));
    expect(readTracks(bob).find((t) => t.id === 'a1')?.name).toBe('Guitar');
  });

  it('reads the title from the session map', () => {
    const doc = new Y.Doc();
    expect(docTitle(doc)).toBeNull();
    sessionMap(doc).set('title', 'Friday jam');
    expect(docTitle(doc)).toBe('Friday jam');
  });
});
