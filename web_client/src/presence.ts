// Presence over awareness (docs/session-schema.md, "Awareness"): who is here, in which
// colour, what they selected, where their cursor is on the timeline and what they are doing.
// Awareness states are written by arbitrary clients, so reading validates everything.

import { paletteColor } from './tracks';

export interface PresenceUser {
  name: string;
  color: string;
}

export interface PresenceSelection {
  clips: string[];
  tracks: string[];
}

/** This client's awareness fields (besides `user`). */
export interface LocalPresence {
  selection: PresenceSelection;
  /** Timeline seconds under the person's pointer, or null when it is off the timeline. */
  cursor: { time: number; trackId: string | null } | null;
  /** "uploading", ... or null. */
  activity: string | null;
}

export interface Peer {
  clientId: number;
  self: boolean;
  name: string;
  color: string;
  clips: string[];
  tracks: string[];
  cursor: number | null;
  cursorTrack: string | null;
  activity: string | null;
}

export const MAX_NAME = 60;
export const MAX_SELECTED = 1000;
const HEX = /^#[0-9a-f]{6}$/i;
const ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Stable colour for a user, so a person keeps it across sessions and reloads. */
export function userColor(userId: string): string {
  let hash = 0;
  for (const ch of userId) hash = (hash * 31 + (ch.codePointAt(0) ?? 0)) | 0;
  return paletteColor(Math.abs(hash));
}

function rec(v: unknown): Record<string, unknown> | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function ids(v: unknown): string[] {
  if (!Array.isArray(v)) return [];
  const out: string[] = [];
  for (const x of v) {
    if (out.length >= MAX_SELECTED) break;
    if (typeof x === 'string' && ID.test(x)) out.push(x);
  }
  return out;
}

/** Everyone with a `user` field, self first then by name (ties by client id). */
export function readPeers(states: ReadonlyMap<number, unknown>, selfId: number): Peer[] {
  const out: Peer[] = [];
  for (const [clientId, raw] of states) {
    const state = rec(raw);
    const user = rec(state?.user);
    if (!state || !user || typeof user.name !== 'string') continue;
    // eslint-disable-next-line no-control-regex
    const name = Array.from(user.name.replace(/[\u0000-\u001f\u007f]/g, '').trim()).slice(0, MAX_NAME).join('');
    const selection = rec(state.selection);
    const cursor = rec(state.cursor);
    const time = cursor?.time;
    const activity = state.activity;
    out.push({
      clientId,
      self: clientId === selfId,
      name: name || 'Someone',
      color: typeof user.color === 'string' && HEX.test(user.color) ? user.color : '#888888',
      clips: ids(selection?.clips),
      tracks: ids(selection?.tracks),
      cursor: typeof time === 'number' && Number.isFinite(time) && time >= 0 ? time : null,
      cursorTrack: typeof cursor?.trackId === 'string' && ID.test(cursor.trackId) ? cursor.trackId : null,
      activity: typeof activity === 'string' && activity ? activity.slice(0, 40) : null,
    });
  }
  return out.sort((a, b) => Number(b.self) - Number(a.self) || a.name.localeCompare(b.name) || a.clientId - b.clientId);
}

/** Which other people selected each clip / track id (for outlines in their colours). */
export function selectionsByOthers(peers: readonly Peer[]): { clips: Map<string, Peer[]>; tracks: Map<string, Peer[]> } {
  const clips = new Map<string, Peer[]>();
  const tracks = new Map<string, Peer[]>();
  for (const p of peers) {
    if (p.self) continue;
    for (const id of p.clips) clips.set(id, [...(clips.get(id) ?? []), p]);
    for (const id of p.tracks) tracks.set(id, [...(tracks.get(id) ?? []), p]);
  }
  return { clips, tracks };
}

/** Rounded cursor time, so tiny pointer moves do not flood awareness. */
export function cursorTime(seconds: number): number {
  return Math.round(Math.max(0, seconds) * 100) / 100;
}
