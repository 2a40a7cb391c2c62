// Reading and editing the tracks of a session document (DESIGN.md §3, docs/session-schema.md):
//   map `session`   {title, ...}
//   map `tracks`    track id -> Y.Map {name, kind, gainDb, pan, mute, solo, color, clips: Y.Map, ...}
//   array `trackOrder` of track ids
// Everything here works on a plain Y.Doc, so it is unit-tested without a socket.

import * as Y from 'yjs';

import { LOCAL_ORIGIN } from './origins';

export const PALETTE: readonly string[] = [
  '#e06c75',
  '#61afef',
  '#98c379',
  '#e5c07b',
  '#c678dd',
  '#56b6c2',
  '#d19a66',
  '#be5046',
];

export const MAX_TRACK_NAME = 100;

export interface TrackView {
  id: string;
  name: string;
  kind: string;
  gainDb: number;
  pan: number;
  mute: boolean;
  solo: boolean;
  color: string;
  clipCount: number;
  /** Tracks a job made together share it (docs/session-schema.md, `group`). */
  group?: string;
}

export function sessionMap(doc: Y.Doc): Y.Map<unknown> {
  return doc.getMap('session');
}

export function tracksMap(doc: Y.Doc): Y.Map<Y.Map<unknown>> {
  return doc.getMap('tracks');
}

export function trackOrder(doc: Y.Doc): Y.Array<string> {
  return doc.getArray('trackOrder');
}

/** The session title stored in the document, or null when there is none yet. */
export function docTitle(doc: Y.Doc): string | null {
  const t = sessionMap(doc).get('title');
  return typeof t === 'string' ? t : null;
}

function str(v: unknown, fallback: string): string {
  return typeof v === 'string' ? v : fallback;
}

function num(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

function bool(v: unknown): boolean {
  return v === true;
}

/**
 * Tracks in display order: ids from `trackOrder` (first occurrence wins, ids with
 * no track skipped), then any track missing from `trackOrder`, sorted by id so
 * every client shows the same order.
 */
export function readTracks(doc: Y.Doc): TrackView[] {
  const tracks = tracksMap(doc);
  const seen = new Set<string>();
  const ids: string[] = [];
  for (const id of trackOrder(doc).toArray()) {
    if (typeof id !== 'string' || seen.has(id) || !tracks.has(id)) continue;
    seen.add(id);
    ids.push(id);
  }
  const rest = [...tracks.keys()].filter((id) => !seen.has(id)).sort();
  const out: TrackView[] = [];
  for (const id of [...ids, ...rest]) {
    const t = tracks.get(id);
    if (!(t instanceof Y.Map)) continue;
    const clips = t.get('clips');
    out.push({
      id,
      name: str(t.get('name'), ''),
      kind: str(t.get('kind'), 'audio'),
      gainDb: num(t.get('gainDb'), 0),
      pan: num(t.get('pan'), 0),
      mute: bool(t.get('mute')),
      solo: bool(t.get('solo')),
      color: str(t.get('color'), PALETTE[0] ?? '#888888'),
      clipCount: clips instanceof Y.Map ? clips.size : 0,
      ...(typeof t.get('group') === 'string' && t.get('group') ? { group: t.get('group') as string } : {}),
    });
  }
  return out;
}

/** "Track N" with N one past the number of tracks, bumped until it is unused. */
export function nextTrackName(existing: readonly string[]): string {
  const names = new Set(existing.map((n) => n.trim().toLowerCase()));
  let n = existing.length + 1;
  while (names.has(`track ${n}`)) n += 1;
  return `Track ${n}`;
}

export function paletteColor(index: number): string {
  const i = ((Math.trunc(index) % PALETTE.length) + PALETTE.length) % PALETTE.length;
  return PALETTE[i] ?? '#888888';
}

/**
 * Clean a track name typed by a person, keystroke by keystroke: control
 * characters (newlines, tabs, ...) become nothing, the length is capped. Spaces are
 * kept as typed (trimming while typing would eat the space before the next word).
 */
export function sanitizeTrackName(raw: string): string {
  // eslint-disable-next-line no-control-regex
  const cleaned = raw.replace(/[\u0000-\u001f\u007f]/g, '');
  return Array.from(cleaned).slice(0, MAX_TRACK_NAME).join('');
}

export function newId(): string {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  // crypto.randomUUID needs a secure context; fall back for plain-http LAN hosts.
  const bytes = new Uint8Array(16);
  c.getRandomValues(bytes);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Add an audio track at the end, in one transaction. Returns its id. */
export function addTrack(doc: Y.Doc, id: string = newId()): string {
  doc.transact(() => {
    const existing = readTracks(doc);
    const track = new Y.Map<unknown>();
    track.set('name', nextTrackName(existing.map((t) => t.name)));
    track.set('kind', 'audio');
    track.set('gainDb', 0);
    track.set('pan', 0);
    track.set('mute', false);
    track.set('solo', false);
    track.set('color', paletteColor(existing.length));
    track.set('clips', new Y.Map<unknown>());
    tracksMap(doc).set(id, track);
    trackOrder(doc).push([id]);
  }, LOCAL_ORIGIN);
  return id;
}

/** Set a track's name (sanitized). Returns false when the track does not exist. */
export function renameTrack(doc: Y.Doc, id: string, name: string): boolean {
  const track = tracksMap(doc).get(id);
  if (!(track instanceof Y.Map)) return false;
  const clean = sanitizeTrackName(name);
  if (track.get('name') === clean) return true;
  doc.transact(() => track.set('name', clean), LOCAL_ORIGIN);
  return true;
}

/** Remove a track (its clips live inside it) and every occurrence of its id in `trackOrder`, in one transaction. */
export function deleteTrack(doc: Y.Doc, id: string): void {
  doc.transact(() => {
    const order = trackOrder(doc);
    const items = order.toArray();
    for (let i = items.length - 1; i >= 0; i -= 1) {
      if (items[i] === id) order.delete(i, 1);
    }
    tracksMap(doc).delete(id);
  }, LOCAL_ORIGIN);
}
