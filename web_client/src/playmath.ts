// Local timeline playback, the pure part: what the browser plays must sound like the server's
// mix (realtime/dsp/graph.py, docs/session-schema.md), so the rules are written out here once
// and tested against the numbers of the Python tests (tests/dsp/test_graph.py, test_units.py):
//
// - fader dB → gain `10^(dB/20)`, exactly 0 at or below -144 dB;
// - constant-power pan `(cos θ, sin θ)`, θ = (pan + 1)·π/4, for mono tracks; the balance law
//   (each side `min(1, √2 · constant-power gain)`) for stereo ones;
// - mute/solo: with any track or bus soloed, a node is audible iff it is soloed, feeds a soloed
//   bus, or is a bus that a soloed node feeds; mute always wins;
// - clips in frames `round(seconds · rate)`, cut at the asset's end, linear fades, clip gain.
//
// Effects and the master limiter are not played locally (docs/session-schema.md says so):
// everything else is, as per-track stereo gains that already include buses and the master gain.

import * as Y from 'yjs';

import { sessionMap, trackOrder, tracksMap } from './tracks';

export const SILENCE_DB = -144;
const SQRT2 = Math.SQRT2;

/** Linear gain of `db` decibels; -144 dB or less (and -Infinity) is exactly 0. NaN throws. */
export function dbToGain(db: number): number {
  if (Number.isNaN(db)) throw new Error('gain in dB must not be NaN');
  if (db <= SILENCE_DB) return 0;
  return Math.pow(10, db / 20);
}

/** Constant-power pan law, exact at the ends (a hard-panned source must not leak). */
export function panGains(pan: number): [number, number] {
  if (!(pan >= -1 && pan <= 1)) throw new Error(`pan must be within [-1, 1], got ${pan}`);
  if (pan === 1) return [0, 1];
  if (pan === -1) return [1, 0];
  const theta = (pan + 1) * (Math.PI / 4);
  return [Math.cos(theta), Math.sin(theta)];
}

/** Left and right gains of a fader: constant power for mono sources, balance for stereo ones. */
export function stripGains(gainDb: number, pan: number, stereo: boolean): [number, number] {
  let [left, right] = panGains(pan);
  if (stereo) {
    left = pan <= 0 ? 1 : Math.min(1, SQRT2 * left);
    right = pan >= 0 ? 1 : Math.min(1, SQRT2 * right);
  }
  const g = dbToGain(gainDb);
  return [g * left, g * right];
}

/** Python's round(): half to even, so frames match the server's to the sample. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export interface ClipFrames {
  start: number;
  offset: number;
  length: number;
  fadeIn: number;
  fadeOut: number;
}

/**
 * A clip's placement in frames, or null when it plays nothing: `length` 0 plays to the asset's
 * end, a clip is cut where its asset ends, fades longer than the clip are cut to it.
 */
export function clipFrames(
  start: number,
  offset: number,
  length: number,
  fadeIn: number,
  fadeOut: number,
  assetFrames: number,
  rate: number,
): ClipFrames | null {
  const s = roundHalfEven(start * rate);
  const off = roundHalfEven(offset * rate);
  const available = assetFrames - off;
  const n = Math.min(length > 0 ? roundHalfEven(length * rate) : available, available);
  if (n <= 0) return null;
  return {
    start: s,
    offset: off,
    length: n,
    fadeIn: Math.min(roundHalfEven(fadeIn * rate), n),
    fadeOut: Math.min(roundHalfEven(fadeOut * rate), n),
  };
}

/** The clip's gain at clip frame `i`: gain × linear fade-in × linear fade-out (0 at the ends). */
export function clipGainAt(i: number, c: ClipFrames, gain: number): number {
  let g = gain;
  if (c.fadeIn > 0 && i < c.fadeIn) g *= i / c.fadeIn;
  const r = c.length - 1 - i;
  if (c.fadeOut > 0 && r < c.fadeOut) g *= r / c.fadeOut;
  return g;
}

// ------------------------------------------------------------------------------- the document

export interface PlayClip {
  id: string;
  assetId: string;
  start: number;
  offset: number;
  length: number;
  gainDb: number;
  fadeIn: number;
  fadeOut: number;
}

export interface PlayTrack {
  id: string;
  kind: string;
  gainDb: number;
  pan: number;
  mute: boolean;
  solo: boolean;
  /** The bus this track feeds as written (resolved, cycles cut, by `routing`), or null. */
  output: string | null;
  phaseInvert: boolean;
  clips: PlayClip[];
}

export interface PlayModel {
  tracks: PlayTrack[];
  masterGainDb: number;
}

function get(m: unknown, key: string): unknown {
  if (m instanceof Y.Map) return m.get(key);
  if (typeof m === 'object' && m !== null && !Array.isArray(m)) return (m as Record<string, unknown>)[key];
  return undefined;
}

/** A number clamped into [lo, hi] as the server reads it; anything else is the default. */
function clampNum(v: unknown, fallback: number, lo: number, hi: number): number {
  if (typeof v !== 'number' || Number.isNaN(v)) return fallback;
  return Math.min(hi, Math.max(lo, v));
}

const TRACK_KINDS = new Set(['audio', 'midi', 'bus', 'live']);

function readPlayClip(id: string, raw: unknown): PlayClip | null {
  const assetId = get(raw, 'assetId');
  if (typeof assetId !== 'string' || !assetId) return null;
  return {
    id,
    assetId,
    start: clampNum(get(raw, 'start'), 0, 0, 1e9),
    offset: clampNum(get(raw, 'offset'), 0, 0, 1e9),
    length: clampNum(get(raw, 'length'), 0, 0, 1e9),
    gainDb: clampNum(get(raw, 'gainDb'), 0, SILENCE_DB, 24),
    fadeIn: clampNum(get(raw, 'fadeIn'), 0, 0, 1e9),
    fadeOut: clampNum(get(raw, 'fadeOut'), 0, 0, 1e9),
  };
}

/** What playback needs from the document, read the way the server's schema reads it. */
export function readPlayModel(doc: Y.Doc): PlayModel {
  const tracks = tracksMap(doc);
  const seen = new Set<string>();
  const ids: string[] = [];
  for (const id of trackOrder(doc).toArray()) {
    if (typeof id === 'string' && !seen.has(id) && tracks.has(id)) {
      seen.add(id);
      ids.push(id);
    }
  }
  ids.push(...[...tracks.keys()].filter((id) => !seen.has(id)).sort());
  const out: PlayTrack[] = [];
  for (const id of ids) {
    const t: unknown = tracks.get(id);
    if (!(t instanceof Y.Map) && (typeof t !== 'object' || t === null)) continue;
    const kindRaw = get(t, 'kind');
    const kind = typeof kindRaw === 'string' && TRACK_KINDS.has(kindRaw) ? kindRaw : 'audio';
    const clips: PlayClip[] = [];
    const rawClips = get(t, 'clips');
    const entries: [string, unknown][] =
      rawClips instanceof Y.Map ? [...rawClips.entries()] : typeof rawClips === 'object' && rawClips !== null ? Object.entries(rawClips) : [];
    for (const [cid, c] of entries) {
      const clip = readPlayClip(cid, c);
      if (clip) clips.push(clip);
    }
    clips.sort((a, b) => a.start - b.start || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const output = get(t, 'output');
    out.push({
      id,
      kind,
      gainDb: clampNum(get(t, 'gainDb'), 0, SILENCE_DB, 24),
      pan: clampNum(get(t, 'pan'), 0, -1, 1),
      mute: get(t, 'mute') === true,
      solo: get(t, 'solo') === true,
      output: typeof output === 'string' && output !== '' && output !== 'master' && output !== id ? output : null,
      phaseInvert: get(t, 'phaseInvert') === true,
      clips,
    });
  }
  return { tracks: out, masterGainDb: clampNum(get(sessionMap(doc).get('master'), 'gainDb'), 0, SILENCE_DB, 24) };
}

// ------------------------------------------------------------------------- routing and solo

/**
 * Where each track's output goes: a bus id, or null for the master. An output that names no bus
 * goes to the master; a routing cycle is cut at the bus that closes it (as the server does).
 */
export function routing(tracks: readonly PlayTrack[]): Map<string, string | null> {
  const byId = new Map(tracks.map((t) => [t.id, t]));
  const dest = new Map<string, string | null>();
  for (const t of tracks) {
    const out = t.output;
    dest.set(t.id, out !== null && byId.get(out)?.kind === 'bus' ? out : null);
  }
  const resolved = new Set<string>();
  for (const b of tracks.filter((t) => t.kind === 'bus').map((t) => t.id)) {
    const path = [b];
    let x = dest.get(b) ?? null;
    while (x !== null && !resolved.has(x)) {
      if (path.includes(x)) {
        dest.set(path[path.length - 1]!, null);
        break;
      }
      path.push(x);
      x = dest.get(x) ?? null;
    }
    for (const p of path) resolved.add(p);
  }
  return dest;
}

function downstream(id: string, dest: Map<string, string | null>): string[] {
  const chain: string[] = [];
  let x = dest.get(id) ?? null;
  while (x !== null) {
    chain.push(x);
    x = dest.get(x) ?? null;
  }
  return chain;
}

/** Which tracks and buses are audible: the server's mute/solo rules, node by node. */
export function audibility(tracks: readonly PlayTrack[], dest: Map<string, string | null> = routing(tracks)): Map<string, boolean> {
  const byId = new Map(tracks.map((t) => [t.id, t]));
  const paths = new Map(tracks.map((t) => [t.id, downstream(t.id, dest)]));
  const anySolo = tracks.some((t) => t.solo);
  const fedBySolo = new Set<string>();
  for (const t of tracks) if (t.solo) for (const b of paths.get(t.id) ?? []) fedBySolo.add(b);
  const out = new Map<string, boolean>();
  for (const t of tracks) {
    let heard: boolean;
    if (t.mute) heard = false;
    else if (!anySolo || t.solo || fedBySolo.has(t.id)) heard = true;
    else heard = (paths.get(t.id) ?? []).some((b) => byId.get(b)?.solo === true);
    out.set(t.id, heard);
  }
  return out;
}

// ------------------------------------------------------------------------------ the mix spec

/** What the playback worklet needs about a decoded asset. */
export interface AssetInfo {
  frames: number;
  channels: number;
}

export interface MixClip extends ClipFrames {
  assetId: string;
  gain: number;
}

export interface MixTrack {
  id: string;
  /** Stereo when one of its clips is stereo (mono clips then feed both sides). */
  stereo: boolean;
  /** Left and right gains from the track to the speakers: fader, pan, polarity, audibility, buses, master. */
  gains: [number, number];
  /** Sorted by start. */
  clips: MixClip[];
}

export interface MixSpec {
  rate: number;
  tracks: MixTrack[];
}

/** Assets the model's clips play (source tracks only: buses and MIDI tracks play no audio). */
export function neededAssets(model: PlayModel): string[] {
  const ids = new Set<string>();
  for (const t of model.tracks) if (t.kind !== 'bus' && t.kind !== 'midi') for (const c of t.clips) ids.add(c.assetId);
  return [...ids].sort();
}

/**
 * The per-track mix at `rate`: clips placed in frames against the decoded assets (an asset not
 * decoded yet plays nothing), each source track's stereo gains multiplied through the buses it
 * feeds and the master gain. Without effects a bus is a pair of channel gains, so the product
 * is exactly what the server's bus chain does to the source.
 */
export function buildMix(model: PlayModel, assets: (id: string) => AssetInfo | null, rate: number): MixSpec {
  const dest = routing(model.tracks);
  const heard = audibility(model.tracks, dest);
  const byId = new Map(model.tracks.map((t) => [t.id, t]));
  const nodeGains = (t: PlayTrack, stereo: boolean): [number, number] => {
    if (!heard.get(t.id)) return [0, 0];
    const [l, r] = stripGains(t.gainDb, t.pan, stereo);
    return t.phaseInvert ? [-l, -r] : [l, r];
  };
  const master = dbToGain(model.masterGainDb);
  const out: MixTrack[] = [];
  for (const t of model.tracks) {
    if (t.kind === 'bus' || t.kind === 'midi') continue;
    const clips: MixClip[] = [];
    let stereo = false;
    for (const c of t.clips) {
      const a = assets(c.assetId);
      if (!a) continue;
      const f = clipFrames(c.start, c.offset, c.length, c.fadeIn, c.fadeOut, a.frames, rate);
      if (!f) continue;
      if (a.channels >= 2) stereo = true;
      clips.push({ ...f, assetId: c.assetId, gain: dbToGain(c.gainDb) });
    }
    if (clips.length === 0) continue;
    clips.sort((a, b) => a.start - b.start);
    let [l, r] = nodeGains(t, stereo);
    for (const b of downstream(t.id, dest)) {
      const bus = byId.get(b);
      if (!bus) break;
      const [bl, br] = nodeGains(bus, true); // buses are stereo
      l *= bl;
      r *= br;
    }
    out.push({ id: t.id, stereo, gains: [l * master, r * master], clips });
  }
  return { rate, tracks: out };
}

// ------------------------------------------------------------------------------ the playhead

/** Wrap a timeline frame into the loop once it reaches the loop's end (the server's clock). */
export function wrapFrame(frame: number, loop: readonly [number, number] | null): number {
  if (!loop) return frame;
  const [start, end] = loop;
  if (end <= start || frame < end) return frame;
  return start + ((frame - start) % (end - start));
}

/** A loop in seconds as frames at `rate`, or null when it is too short to hold a frame. */
export function loopFrames(loop: readonly [number, number] | null, rate: number): [number, number] | null {
  if (!loop) return null;
  const s = roundHalfEven(loop[0] * rate);
  const e = roundHalfEven(loop[1] * rate);
  return e > s ? [s, e] : null;
}

/** A linear level as dBFS with one decimal, "-inf" for silence (what the page shows and tests read). */
export function levelDb(linear: number): string {
  if (!(linear > 0)) return '-inf';
  return (20 * Math.log10(linear)).toFixed(1);
}
