// The shared transport (docs/session-schema.md: `session.transport`) and the session's
// tempo fields. Pure reads and one-transaction writes on a plain Y.Doc.
//
// Where the playhead is follows the server's preview clock (realtime/preview.py
// PlayheadClock) exactly: `position + (now - startedAt)`, and with a loop, a playhead at or
// past the loop's end wraps into it, so the page, the preview and every collaborator agree.

import * as Y from 'yjs';

import { LOCAL_ORIGIN, TRANSPORT_ORIGIN } from './origins';
import { sessionMap } from './tracks';

export type Range = readonly [number, number];

export interface TransportView {
  playing: boolean;
  startedAt: number;
  position: number;
  /** The active loop `[start, end]` in seconds, or null when not looping. */
  loop: Range | null;
}

export const MIN_BPM = 20;
export const MAX_BPM = 999;
export const TS_UNITS: readonly number[] = [2, 4, 8, 16];
export const MAX_TS_BEATS = 32;
/** A loop shorter than this (seconds) is no loop: a click on the ruler, not a drag. */
export const MIN_LOOP_SECONDS = 0.05;

function num(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

function field(m: unknown, key: string): unknown {
  if (m instanceof Y.Map) return m.get(key);
  if (typeof m === 'object' && m !== null) return (m as Record<string, unknown>)[key];
  return undefined;
}

/** A valid `[start, end]` (numbers, 0 ≤ start < end) or null; arrays may be plain or Y.Array. */
export function parseRange(v: unknown): Range | null {
  const arr = v instanceof Y.Array ? (v.toArray() as unknown[]) : Array.isArray(v) ? (v as unknown[]) : null;
  if (!arr || arr.length !== 2) return null;
  const [a, b] = arr;
  if (typeof a !== 'number' || typeof b !== 'number' || !Number.isFinite(a) || !Number.isFinite(b)) return null;
  if (a < 0 || b <= a) return null;
  return [a, b];
}

function transportMap(doc: Y.Doc): Y.Map<unknown> | null {
  const t = sessionMap(doc).get('transport');
  return t instanceof Y.Map ? (t as Y.Map<unknown>) : null;
}

/** The transport map, created (in the caller's transaction) when missing or not a map. */
function ensureTransport(doc: Y.Doc): Y.Map<unknown> {
  const existing = transportMap(doc);
  if (existing) return existing;
  const t = new Y.Map<unknown>();
  sessionMap(doc).set('transport', t);
  return t;
}

export function readTransport(doc: Y.Doc): TransportView {
  const t = sessionMap(doc).get('transport');
  return {
    playing: field(t, 'playing') === true,
    startedAt: num(field(t, 'startedAt'), 0),
    position: Math.max(0, num(field(t, 'position'), 0)),
    loop: parseRange(field(t, 'loop')),
  };
}

/** The loop range remembered while looping is off (`transport.lastLoop`), or null. */
export function readLastLoop(doc: Y.Doc): Range | null {
  return parseRange(field(sessionMap(doc).get('transport'), 'lastLoop'));
}

/** Wrap a playhead into the loop once it reaches the loop's end (as the server's clock does). */
export function wrapLoop(position: number, loop: Range | null): number {
  if (!loop) return position;
  const [start, end] = loop;
  if (end <= start || position < end) return position;
  return start + ((position - start) % (end - start));
}

/** Where the shared transport is now (seconds), given the current time in ms. */
export function transportPosition(t: TransportView, nowMs: number): number {
  if (!t.playing) return t.position;
  const elapsed = t.startedAt > 0 ? Math.max(0, nowMs - t.startedAt) / 1000 : 0;
  return wrapLoop(t.position + elapsed, t.loop);
}

function roundMs(seconds: number): number {
  return Math.round(seconds * 1000) / 1000;
}

/**
 * Play starts from where the transport is; stop holds the current position, and stop on a
 * stopped transport returns to zero. One transaction, so followers see one change.
 */
export function setTransport(doc: Y.Doc, playing: boolean, nowMs: number = Date.now()): void {
  doc.transact(() => {
    const current = readTransport(doc);
    const position = !playing && !current.playing ? 0 : transportPosition(current, nowMs);
    const tm = ensureTransport(doc);
    tm.set('playing', playing);
    tm.set('startedAt', nowMs);
    tm.set('position', roundMs(position));
  }, TRANSPORT_ORIGIN);
}

/** Move the playhead to `seconds`, playing or not (a playing transport keeps playing from there). */
export function seek(doc: Y.Doc, seconds: number, nowMs: number = Date.now()): void {
  const position = roundMs(Math.max(0, Number.isFinite(seconds) ? seconds : 0));
  doc.transact(() => {
    const tm = ensureTransport(doc);
    tm.set('startedAt', nowMs);
    tm.set('position', position);
  }, TRANSPORT_ORIGIN);
}

/** Order and validate a dragged range; null when it is too short to be a loop. */
export function normalizeRange(a: number, b: number): Range | null {
  const lo = Math.max(0, Math.min(a, b));
  const hi = Math.max(0, Math.max(a, b));
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || hi - lo < MIN_LOOP_SECONDS) return null;
  return [roundMs(lo), roundMs(hi)];
}

/**
 * Set the loop (an edit: undoable) and remember it in `lastLoop`, or switch looping off
 * (`range` null) keeping `lastLoop`, so the loop toggle can bring it back.
 */
export function setLoop(doc: Y.Doc, range: Range | null, nowMs: number = Date.now()): void {
  const before = readTransport(doc);
  if (!range && before.playing && before.loop) {
    // Leaving a loop while playing: re-anchor at the wrapped playhead first, or it would jump
    // to where it would have been without the loop. A transport move (its own, untracked
    // transaction), so undoing the loop change never moves the playhead back.
    seek(doc, transportPosition(before, nowMs), nowMs);
  }
  doc.transact(() => {
    const tm = ensureTransport(doc);
    if (range) {
      tm.set('loop', [range[0], range[1]]);
      tm.set('lastLoop', [range[0], range[1]]);
    } else if (tm.has('loop')) {
      if (before.loop) tm.set('lastLoop', [before.loop[0], before.loop[1]]);
      tm.delete('loop');
    }
  }, LOCAL_ORIGIN);
}

/** Loop on/off: off keeps the range; on restores the last range, or `fallback`. */
export function toggleLoop(doc: Y.Doc, fallback: Range, nowMs: number = Date.now()): boolean {
  const t = readTransport(doc);
  if (t.loop) {
    setLoop(doc, null, nowMs);
    return false;
  }
  setLoop(doc, readLastLoop(doc) ?? fallback, nowMs);
  return true;
}

/** A default loop when none was ever set: `bars` bars from the bar the playhead is in. */
export function defaultLoop(position: number, bpm: number, timeSignature: readonly [number, number], bars = 4): Range {
  const barS = (60 / bpm) * (4 / timeSignature[1]) * timeSignature[0];
  const start = Math.floor(Math.max(0, position) / barS + 1e-9) * barS;
  return [roundMs(start), roundMs(start + bars * barS)];
}

/** A tempo typed by a person, or null when it is not a number in range. */
export function parseBpm(text: string): number | null {
  const t = text.trim().replace(',', '.');
  if (!/^\d+(\.\d+)?$/.test(t)) return null;
  const v = Number(t);
  if (!Number.isFinite(v) || v < MIN_BPM || v > MAX_BPM) return null;
  return Math.round(v * 100) / 100;
}

export function setBpm(doc: Y.Doc, bpm: number): boolean {
  if (!Number.isFinite(bpm) || bpm < MIN_BPM || bpm > MAX_BPM) return false;
  if (sessionMap(doc).get('bpm') === bpm) return true;
  doc.transact(() => sessionMap(doc).set('bpm', bpm), LOCAL_ORIGIN);
  return true;
}

/** A time signature a person chose, or null: 1–32 beats over 2, 4, 8 or 16. */
export function parseTimeSignature(beats: unknown, unit: unknown): [number, number] | null {
  const b = typeof beats === 'string' ? Number(beats.trim()) : beats;
  const u = typeof unit === 'string' ? Number(unit.trim()) : unit;
  if (typeof b !== 'number' || typeof u !== 'number' || !Number.isInteger(b) || !Number.isInteger(u)) return null;
  if (b < 1 || b > MAX_TS_BEATS || !TS_UNITS.includes(u)) return null;
  return [b, u];
}

export function setTimeSignature(doc: Y.Doc, ts: readonly [number, number]): boolean {
  const parsed = parseTimeSignature(ts[0], ts[1]);
  if (!parsed) return false;
  const current = sessionMap(doc).get('timeSignature');
  const arr = current instanceof Y.Array ? current.toArray() : Array.isArray(current) ? current : [];
  if (arr[0] === parsed[0] && arr[1] === parsed[1]) return true;
  // a plain JSON array, as the server writes it
  doc.transact(() => sessionMap(doc).set('timeSignature', parsed), LOCAL_ORIGIN);
  return true;
}

/** `transport.recording`: the jam is recorded into the session while it and `playing` are true. */
export function readRecording(doc: Y.Doc): boolean {
  return field(sessionMap(doc).get('transport'), 'recording') === true;
}

/** Arm or disarm recording (shared, not undoable: like play and stop). */
export function setRecording(doc: Y.Doc, on: boolean): void {
  doc.transact(() => ensureTransport(doc).set('recording', on), TRANSPORT_ORIGIN);
}

/**
 * The jam's Record button: arm recording and, if the transport is stopped, start it from where
 * it is, in one transaction, so recording starts at once and followers see one change.
 * Disarming leaves the transport as it is.
 */
export function toggleRecording(doc: Y.Doc, nowMs: number = Date.now()): boolean {
  const on = !readRecording(doc);
  doc.transact(() => {
    ensureTransport(doc).set('recording', on);
    if (on && !readTransport(doc).playing) setTransport(doc, true, nowMs);
  }, TRANSPORT_ORIGIN);
  return on;
}
