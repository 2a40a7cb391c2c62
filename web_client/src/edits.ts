// Editing gestures on the shared document: each is ONE transaction with the local origin,
// so a collaborator sees one change and the undo manager undoes the whole gesture.
// (docs/session-schema.md: `tracks` → track → `clips` → clip id → {assetId, start, offset, length, ...})

import * as Y from 'yjs';

import type { ClipGeom } from './clipmath';
import { LOCAL_ORIGIN } from './origins';
import { moveId } from './reorder';
import { PALETTE, readTracks, trackOrder, tracksMap } from './tracks';

export interface ClipRef {
  trackId: string;
  clipId: string;
}

export interface ClipMove extends ClipRef {
  toTrack: string;
  start: number;
}

function clipsOf(doc: Y.Doc, trackId: string): Y.Map<unknown> | null {
  const clips = tracksMap(doc).get(trackId)?.get('clips');
  return clips instanceof Y.Map ? (clips as Y.Map<unknown>) : null;
}

/** The clips map of a track, created when a (foreign-written) track lacks one. */
function ensureClips(doc: Y.Doc, trackId: string): Y.Map<unknown> | null {
  const track = tracksMap(doc).get(trackId);
  if (!(track instanceof Y.Map)) return null;
  const existing = track.get('clips');
  if (existing instanceof Y.Map) return existing as Y.Map<unknown>;
  const clips = new Y.Map<unknown>();
  track.set('clips', clips);
  return clips;
}

/** A fresh Y.Map holding the same fields as a clip (a Y.Map or a plain object). */
function copyClip(value: unknown): Y.Map<unknown> | null {
  if (value instanceof Y.Map) return value.clone() as Y.Map<unknown>;
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    return new Y.Map<unknown>(Object.entries(value as Record<string, unknown>));
  }
  return null;
}

/** The clip as a Y.Map inside its track (a plain-object clip is turned into one). */
function editableClip(clips: Y.Map<unknown>, clipId: string): Y.Map<unknown> | null {
  const value = clips.get(clipId);
  if (value instanceof Y.Map) return value as Y.Map<unknown>;
  const copy = copyClip(value);
  if (!copy) return null;
  clips.set(clipId, copy);
  return copy;
}

function setIfChanged(m: Y.Map<unknown>, key: string, value: unknown): void {
  if (m.get(key) !== value) m.set(key, value);
}

/**
 * Move clips (same track: a new `start`; another track: the clip map moves there under the
 * same id). One transaction. Returns the refs the clips have afterwards.
 */
export function moveClips(doc: Y.Doc, moves: readonly ClipMove[]): ClipRef[] {
  const out: ClipRef[] = [];
  doc.transact(() => {
    for (const m of moves) {
      const from = clipsOf(doc, m.trackId);
      if (!from || !from.has(m.clipId)) continue;
      const start = Math.max(0, m.start);
      if (m.toTrack === m.trackId) {
        const clip = editableClip(from, m.clipId);
        if (!clip) continue;
        setIfChanged(clip, 'start', start);
        out.push({ trackId: m.trackId, clipId: m.clipId });
        continue;
      }
      const to = ensureClips(doc, m.toTrack);
      const copy = copyClip(from.get(m.clipId));
      if (!to || !copy) continue;
      copy.set('start', start);
      from.delete(m.clipId);
      to.set(m.clipId, copy);
      out.push({ trackId: m.toTrack, clipId: m.clipId });
    }
  }, LOCAL_ORIGIN);
  return out;
}

/** Write a trimmed clip's start, offset and length in one transaction. */
export function setClipGeometry(doc: Y.Doc, ref: ClipRef, geom: ClipGeom): boolean {
  const clips = clipsOf(doc, ref.trackId);
  if (!clips || !clips.has(ref.clipId)) return false;
  doc.transact(() => {
    const clip = editableClip(clips, ref.clipId);
    if (!clip) return;
    setIfChanged(clip, 'start', geom.start);
    setIfChanged(clip, 'offset', geom.offset);
    setIfChanged(clip, 'length', geom.length);
  }, LOCAL_ORIGIN);
  return true;
}

/** Remove clips in one transaction; returns how many were there. */
export function deleteClips(doc: Y.Doc, refs: readonly ClipRef[]): number {
  let n = 0;
  doc.transact(() => {
    for (const ref of refs) {
      const clips = clipsOf(doc, ref.trackId);
      if (clips?.has(ref.clipId)) {
        clips.delete(ref.clipId);
        n += 1;
      }
    }
  }, LOCAL_ORIGIN);
  return n;
}

/** Copy clips (same track, at the given start, with new ids) in one transaction. */
export function duplicateClips(
  doc: Y.Doc,
  items: readonly (ClipRef & { start: number; newId: string })[],
): ClipRef[] {
  const out: ClipRef[] = [];
  doc.transact(() => {
    for (const it of items) {
      const clips = clipsOf(doc, it.trackId);
      const copy = copyClip(clips?.get(it.clipId));
      if (!clips || !copy) continue;
      copy.set('start', Math.max(0, it.start));
      clips.set(it.newId, copy);
      out.push({ trackId: it.trackId, clipId: it.newId });
    }
  }, LOCAL_ORIGIN);
  return out;
}

const HEX_COLOR = /^#[0-9a-f]{6}$/i;

/** Set a track's colour: one of the palette's, or any `#rrggbb`. */
export function setTrackColor(doc: Y.Doc, trackId: string, color: string): boolean {
  const track = tracksMap(doc).get(trackId);
  if (!(track instanceof Y.Map) || !(PALETTE.includes(color) || HEX_COLOR.test(color))) return false;
  if (track.get('color') !== color) doc.transact(() => track.set('color', color), LOCAL_ORIGIN);
  return true;
}

/**
 * Move a track to `toIndex` of the display order, writing `trackOrder`. When the stored array
 * already is the display order, only the moved id is deleted and re-inserted (so concurrent
 * reorders of other tracks merge); otherwise (duplicates or missing ids after concurrent
 * edits) the array is rewritten to the clean new order.
 */
export function reorderTrack(doc: Y.Doc, trackId: string, toIndex: number): boolean {
  const shown = readTracks(doc).map((t) => t.id);
  const from = shown.indexOf(trackId);
  if (from < 0) return false;
  const next = moveId(shown, trackId, toIndex);
  if (next.every((id, i) => id === shown[i])) return true;
  const order = trackOrder(doc);
  const raw = order.toArray();
  doc.transact(() => {
    const clean = raw.length === shown.length && raw.every((id, i) => id === shown[i]);
    if (clean) {
      order.delete(from, 1);
      order.insert(next.indexOf(trackId), [trackId]);
    } else {
      order.delete(0, raw.length);
      order.insert(0, next);
    }
  }, LOCAL_ORIGIN);
  return true;
}
