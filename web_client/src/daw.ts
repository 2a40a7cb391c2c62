// Pure DAW helpers (timeline mapping, bar/beat grid, fader law, waveform and meter math)
// and the document edits behind the session view's timeline, mixer and transport
// (docs/session-schema.md). Nothing here touches the DOM, so it is unit-tested directly.

import * as Y from 'yjs';

import { readNotes, type MidiNote } from './jobs';
import { LOCAL_ORIGIN } from './origins';
import { paletteColor, readTracks, sessionMap, trackOrder, tracksMap } from './tracks';

// The transport moved to its own module; re-exported so existing imports keep working.
export { readTransport, setTransport, transportPosition, type TransportView } from './transport';

// ---------------------------------------------------------------- timeline mapping

export const MIN_PX_PER_SECOND = 5;
export const MAX_PX_PER_SECOND = 400;

export function secondsToPx(seconds: number, pxPerSecond: number): number {
  return seconds * pxPerSecond;
}

export function pxToSeconds(px: number, pxPerSecond: number): number {
  return pxPerSecond > 0 ? px / pxPerSecond : 0;
}

/** Zoom by a factor, clamped to the supported range. */
export function zoom(pxPerSecond: number, factor: number): number {
  const next = pxPerSecond * factor;
  return Math.min(MAX_PX_PER_SECOND, Math.max(MIN_PX_PER_SECOND, next));
}

// ---------------------------------------------------------------- bar/beat grid

export interface GridLine {
  /** Seconds from the start of the timeline. */
  time: number;
  x: number;
  /** 1-based bar number. */
  bar: number;
  /** 1-based beat within the bar. */
  beat: number;
  isBar: boolean;
}

/** Seconds per beat: the time-signature unit scales the quarter-note BPM (6/8 → eighths). */
export function beatSeconds(bpm: number, unit = 4): number {
  const b = Number.isFinite(bpm) && bpm > 0 ? bpm : 120;
  const u = Number.isFinite(unit) && unit > 0 ? unit : 4;
  return (60 / b) * (4 / u);
}

/**
 * Grid lines from 0 to `durationS` (inclusive). When beats would be closer than
 * `minBeatPx`, only bar lines are kept (and bars are thinned the same way).
 */
export function gridLines(
  bpm: number,
  timeSignature: readonly [number, number],
  durationS: number,
  pxPerSecond: number,
  minBeatPx = 8,
): GridLine[] {
  const beats = Math.max(1, Math.trunc(timeSignature[0]) || 4);
  const beatS = beatSeconds(bpm, timeSignature[1]);
  const beatPx = beatS * pxPerSecond;
  const barPx = beatPx * beats;
  const showBeats = beatPx >= minBeatPx;
  const barStep = barPx >= minBeatPx ? 1 : Math.ceil(minBeatPx / Math.max(barPx, 1e-9));
  const out: GridLine[] = [];
  const total = Math.floor(durationS / beatS + 1e-9);
  for (let i = 0; i <= total; i += 1) {
    const bar = Math.floor(i / beats) + 1;
    const beat = (i % beats) + 1;
    const isBar = beat === 1;
    if (!isBar && !showBeats) continue;
    if (isBar && (bar - 1) % barStep !== 0) continue;
    const time = i * beatS;
    out.push({ time, x: time * pxPerSecond, bar, beat, isBar });
  }
  return out;
}

/** "bar.beat" (1-based) for a time in seconds. */
export function barBeatLabel(seconds: number, bpm: number, timeSignature: readonly [number, number]): string {
  const beats = Math.max(1, Math.trunc(timeSignature[0]) || 4);
  const beatIndex = Math.floor(Math.max(0, seconds) / beatSeconds(bpm, timeSignature[1]) + 1e-9);
  return `${Math.floor(beatIndex / beats) + 1}.${(beatIndex % beats) + 1}`;
}

export function formatTime(seconds: number): string {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  return `${m}:${rest.toFixed(1).padStart(4, '0')}`;
}

// ---------------------------------------------------------------- fader law

export const MIN_DB = -144;
export const MAX_DB = 24;
export const FADER_STEPS = 1000;

/** Fader position (0–1) → dB breakpoints: unity sits at 3/4 of the travel, +6 dB at the top. */
const FADER_CURVE: readonly (readonly [number, number])[] = [
  [0, MIN_DB],
  [0.05, -60],
  [0.3, -24],
  [0.55, -12],
  [0.75, 0],
  [1, 6],
];

export function faderToDb(pos: number): number {
  const p = Math.min(1, Math.max(0, Number.isFinite(pos) ? pos : 0));
  for (let i = 1; i < FADER_CURVE.length; i += 1) {
    const [p1, d1] = FADER_CURVE[i]!;
    const [p0, d0] = FADER_CURVE[i - 1]!;
    if (p <= p1) return Math.round((d0 + ((p - p0) / (p1 - p0)) * (d1 - d0)) * 10) / 10;
  }
  return 6;
}

export function dbToFader(db: number): number {
  if (!Number.isFinite(db) || db <= MIN_DB) return 0;
  for (let i = 1; i < FADER_CURVE.length; i += 1) {
    const [p1, d1] = FADER_CURVE[i]!;
    const [p0, d0] = FADER_CURVE[i - 1]!;
    if (db <= d1) return p0 + ((db - d0) / (d1 - d0)) * (p1 - p0);
  }
  return 1;
}

export function formatDb(db: number): string {
  if (!Number.isFinite(db) || db <= MIN_DB) return '−∞ dB';
  const v = Math.round(db * 10) / 10;
  return `${v > 0 ? '+' : v < 0 ? '−' : ''}${Math.abs(v).toFixed(1)} dB`;
}

export function formatPan(pan: number): string {
  const v = Math.round(pan * 100);
  if (v === 0) return 'C';
  return v < 0 ? `L${-v}` : `R${v}`;
}

// ---------------------------------------------------------------- waveform & meters

export interface Peaks {
  min: number[];
  max: number[];
}

export interface WaveColumn {
  x: number;
  y: number;
  h: number;
}

/**
 * One column per peak slice, scaled to a canvas `width` × `height` (amplitude ±1 fills the
 * height; every column is at least 1 px tall so silence still draws a centre line).
 */
export function waveColumns(peaks: Peaks, width: number, height: number): WaveColumn[] {
  const n = Math.min(peaks.min.length, peaks.max.length);
  if (n === 0 || width <= 0 || height <= 0) return [];
  const mid = height / 2;
  const cols: WaveColumn[] = [];
  const w = Math.max(1, Math.round(width));
  for (let x = 0; x < w; x += 1) {
    const i = Math.min(n - 1, Math.floor((x * n) / w));
    const hi = Math.max(-1, Math.min(1, peaks.max[i] ?? 0));
    const lo = Math.max(-1, Math.min(1, peaks.min[i] ?? 0));
    const top = mid - Math.max(hi, lo) * mid;
    const bottom = mid - Math.min(hi, lo) * mid;
    cols.push({ x, y: top, h: Math.max(1, bottom - top) });
  }
  return cols;
}

export const METER_FLOOR_DB = -60;

/** Meter fill (0–1) for a level in dB; silence (null) is 0. */
export function meterFraction(db: number | null | undefined): number {
  if (typeof db !== 'number' || !Number.isFinite(db)) return 0;
  return Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
}

/** The loudest channel of a `peakDb` list (`null` = silent channel). */
export function maxPeakDb(peakDb: unknown): number | null {
  if (!Array.isArray(peakDb)) return null;
  let best: number | null = null;
  for (const v of peakDb) if (typeof v === 'number' && Number.isFinite(v) && (best === null || v > best)) best = v;
  return best;
}

// ---------------------------------------------------------------- document

export interface ClipView {
  id: string;
  assetId: string;
  start: number;
  offset: number;
  length: number;
  /** `midi` clips only: the transcribed notes (seconds of the clip's asset). */
  notes?: MidiNote[];
}

function num(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

function field(m: unknown, key: string): unknown {
  if (m instanceof Y.Map) return m.get(key);
  if (typeof m === 'object' && m !== null) return (m as Record<string, unknown>)[key];
  return undefined;
}

export function readClips(doc: Y.Doc, trackId: string): ClipView[] {
  const clips = tracksMap(doc).get(trackId)?.get('clips');
  if (!(clips instanceof Y.Map)) return [];
  const out: ClipView[] = [];
  for (const [id, c] of clips.entries()) {
    const assetId = field(c, 'assetId');
    if (typeof assetId !== 'string') continue;
    out.push({
      id,
      assetId,
      start: Math.max(0, num(field(c, 'start'), 0)),
      offset: Math.max(0, num(field(c, 'offset'), 0)),
      length: Math.max(0, num(field(c, 'length'), 0)),
      ...(field(c, 'notes') !== undefined ? { notes: readNotes(field(c, 'notes')) } : {}),
    });
  }
  return out.sort((a, b) => a.start - b.start || a.id.localeCompare(b.id));
}

export function readBpm(doc: Y.Doc): number {
  const bpm = num(sessionMap(doc).get('bpm'), 120);
  return Math.min(999, Math.max(20, bpm));
}

export function readTimeSignature(doc: Y.Doc): [number, number] {
  const ts = sessionMap(doc).get('timeSignature');
  const arr = ts instanceof Y.Array ? ts.toArray() : Array.isArray(ts) ? ts : [];
  const beats = num(arr[0], 4);
  const unit = num(arr[1], 4);
  return [beats >= 1 && beats <= 32 ? Math.trunc(beats) : 4, unit >= 1 && unit <= 32 ? Math.trunc(unit) : 4];
}

export function setTrackField(doc: Y.Doc, trackId: string, key: string, value: unknown): boolean {
  const track = tracksMap(doc).get(trackId);
  if (!(track instanceof Y.Map)) return false;
  if (track.get(key) === value) return true;
  doc.transact(() => track.set(key, value), LOCAL_ORIGIN);
  return true;
}

/** A track name from an uploaded file's name: no extension, no control characters. */
export function trackNameFromFile(fileName: string): string {
  // eslint-disable-next-line no-control-regex
  const base = fileName.replace(/\.[^./\\]{1,8}$/, '').replace(/[\u0000-\u001f\u007f]/g, '').trim();
  return Array.from(base || 'Audio').slice(0, 100).join('');
}

/** One transaction: a new audio track at the end holding one clip of the asset at 0 s. */
export function addTrackWithClip(
  doc: Y.Doc,
  asset: { assetId: string; name: string; duration: number },
  ids: { track: string; clip: string },
): void {
  doc.transact(() => {
    const existing = readTracks(doc);
    const track = new Y.Map<unknown>();
    track.set('name', trackNameFromFile(asset.name));
    track.set('kind', 'audio');
    track.set('gainDb', 0);
    track.set('pan', 0);
    track.set('mute', false);
    track.set('solo', false);
    track.set('color', paletteColor(existing.length));
    const clips = new Y.Map<unknown>();
    const clip = new Y.Map<unknown>();
    clip.set('assetId', asset.assetId);
    clip.set('start', 0);
    clip.set('offset', 0);
    clip.set('length', Math.max(0, asset.duration));
    clip.set('gainDb', 0);
    clip.set('fadeIn', 0);
    clip.set('fadeOut', 0);
    clips.set(ids.clip, clip);
    track.set('clips', clips);
    tracksMap(doc).set(ids.track, track);
    trackOrder(doc).push([ids.track]);
  }, LOCAL_ORIGIN);
}
