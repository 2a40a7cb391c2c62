// The mixer that the playback worklet runs, kept free of worklet globals so it is unit-tested in
// Node: decoded assets in, a MixSpec (playmath.ts) and the transport in, stereo blocks out.
//
// - Clips: asset frames times the clip gain and its linear fades, summed per track (the
//   server's add_clip kernel, sample for sample).
// - Track gains: every change ramps linearly over 10 ms from the value in effect, in the
//   server's convention (value `start + (end - start)(n + 1)/len` at ramp frame n), so a fader,
//   pan, mute or solo change by anyone is heard at once and never clicks.
// - Transport: the playhead advances one frame per frame and wraps at the loop's end. Play
//   fades in, stop fades out, and a jump (a seek, a collaborator's play from elsewhere, clock
//   drift past a tolerance) fades out, moves, fades in: a few milliseconds, no click.

import { clipGainAt, wrapFrame, type MixClip, type MixSpec } from './playmath';

export interface EngineTransport {
  playing: boolean;
  /** Timeline frame at the next frame rendered. */
  frame: number;
  loop: [number, number] | null;
}

export interface Meter {
  /** RMS and peak of the last window, per side (linear). */
  rms: [number, number];
  peak: [number, number];
  /** Where the playhead is (timeline frame), and whether audio is running. */
  frame: number;
  running: boolean;
}

interface TrackState {
  id: string;
  stereo: boolean;
  clips: MixClip[];
  from: [number, number];
  to: [number, number];
  /** Frames of the current ramp rendered; >= len when settled. */
  k: number;
  len: number;
}

export interface EngineOptions {
  rampFrames?: number;
  declickFrames?: number;
  meterFrames?: number;
  /** A requested position this close (frames) to where playback is counts as no jump. */
  toleranceFrames?: number;
}

export class PlaybackEngine {
  readonly rate: number;
  private readonly rampFrames: number;
  private readonly declickFrames: number;
  private readonly meterFrames: number;
  private readonly tolerance: number;
  private readonly assets = new Map<string, Float32Array[]>();
  private tracks: TrackState[] = [];
  private running = false;
  private pos = 0;
  private loop: [number, number] | null = null;
  private env = 0;
  private envTarget = 0;
  private pending: number | null = null;
  private pendingAge = 0;
  private stopAfterFade = false;
  private bufL = new Float32Array(0);
  private bufR = new Float32Array(0);
  private sum = [0, 0];
  private peaks = [0, 0];
  private counted = 0;
  private meter: Meter | null = null;

  constructor(rate: number, opts: EngineOptions = {}) {
    if (!Number.isFinite(rate) || rate <= 0) throw new Error(`sample rate must be positive, got ${rate}`);
    this.rate = rate;
    this.rampFrames = opts.rampFrames ?? Math.round(0.01 * rate);
    this.declickFrames = Math.max(1, opts.declickFrames ?? Math.round(0.005 * rate));
    this.meterFrames = Math.max(1, opts.meterFrames ?? Math.round(0.05 * rate));
    this.tolerance = opts.toleranceFrames ?? Math.round(0.03 * rate);
  }

  /** A decoded asset (one Float32Array per channel, at the engine's rate). */
  setAsset(id: string, channels: Float32Array[]): void {
    if (channels.length === 0) throw new Error(`asset ${id} has no channels`);
    this.assets.set(id, channels);
  }

  hasAsset(id: string): boolean {
    return this.assets.has(id);
  }

  /** New tracks, clips and gains: kept tracks ramp to their new gains, new ones start at them. */
  setMix(spec: MixSpec): void {
    const old = new Map(this.tracks.map((t) => [t.id, t]));
    this.tracks = spec.tracks.map((t) => {
      const prev = old.get(t.id);
      const target: [number, number] = [t.gains[0], t.gains[1]];
      if (!prev) return { id: t.id, stereo: t.stereo, clips: t.clips, from: target, to: target, k: this.rampFrames, len: this.rampFrames };
      const state: TrackState = { ...prev, stereo: t.stereo, clips: t.clips };
      if (prev.to[0] !== target[0] || prev.to[1] !== target[1]) {
        state.from = this.current(prev);
        state.to = target;
        state.k = 0;
        state.len = this.rampFrames;
      }
      return state;
    });
  }

  setTransport(t: EngineTransport): void {
    this.loop = t.loop && t.loop[1] > t.loop[0] ? [t.loop[0], t.loop[1]] : null;
    const frame = wrapFrame(Math.max(0, Math.round(t.frame)), this.loop);
    if (!t.playing) {
      if (this.running) {
        this.envTarget = 0;
        this.stopAfterFade = true;
      }
      this.pending = null;
      return;
    }
    this.stopAfterFade = false;
    if (!this.running) {
      this.running = true;
      this.pos = frame;
      this.env = 0;
      this.envTarget = 1;
      this.pending = null;
      return;
    }
    if (this.distance(frame, this.pending ?? this.pos) <= this.tolerance) {
      if (this.pending === null) this.envTarget = 1;
      return;
    }
    this.pending = frame;
    this.pendingAge = 0;
    this.envTarget = 0;
  }

  /** The last full meter window, once (null when none finished since the last call). */
  takeMeter(): Meter | null {
    const m = this.meter;
    this.meter = null;
    return m;
  }

  /** Render the next `left.length` frames into `left` and `right` (overwritten). */
  render(left: Float32Array, right: Float32Array): void {
    const n = left.length;
    left.fill(0);
    right.fill(0);
    if (this.running && this.env === 0) {
      if (this.pending !== null) {
        this.pos = wrapFrame(this.pending + this.pendingAge, this.loop);
        this.pending = null;
        this.envTarget = 1;
      } else if (this.stopAfterFade) {
        this.running = false;
        this.stopAfterFade = false;
      }
    }
    if (this.running) {
      let o = 0;
      while (o < n) {
        let m = n - o;
        const loop = this.loop;
        const inLoop = loop !== null && this.pos < loop[1];
        if (inLoop) m = Math.min(m, loop[1] - this.pos);
        this.mixSegment(left, right, o, m);
        this.pos += m;
        if (inLoop && this.pos >= loop[1]) this.pos = loop[0];
        o += m;
      }
      this.advanceTracks(n);
      this.applyEnvelope(left, right);
      if (this.pending !== null) this.pendingAge += n;
    } else {
      // ramps settle while stopped, so a later play starts at the current mix
      this.advanceTracks(n);
    }
    this.measure(left, right);
  }

  /** The gains at the last frame rendered. */
  private current(t: TrackState): [number, number] {
    if (t.k >= t.len || t.len === 0) return [t.to[0], t.to[1]];
    const f = t.k / t.len;
    return [t.from[0] + (t.to[0] - t.from[0]) * f, t.from[1] + (t.to[1] - t.from[1]) * f];
  }

  private advanceTracks(n: number): void {
    for (const t of this.tracks) t.k = Math.min(t.len, t.k + n);
  }

  private distance(a: number, b: number): number {
    const d = Math.abs(a - b);
    if (!this.loop) return d;
    const len = this.loop[1] - this.loop[0];
    return Math.min(d, Math.abs(len - d));
  }

  /** Tracks' clips for `m` timeline frames from `pos`, times their ramped gains, into the output at `o`. */
  private mixSegment(left: Float32Array, right: Float32Array, o: number, m: number): void {
    if (this.bufL.length < m) {
      this.bufL = new Float32Array(m);
      this.bufR = new Float32Array(m);
    }
    const t0 = this.pos;
    const t1 = t0 + m;
    for (const t of this.tracks) {
      const settled = t.k >= t.len;
      if (settled && t.to[0] === 0 && t.to[1] === 0) continue; // silent: skip the work
      const bl = this.bufL;
      const br = this.bufR;
      bl.fill(0, 0, m);
      if (t.stereo) br.fill(0, 0, m);
      let any = false;
      for (const c of t.clips) {
        if (c.start >= t1) break;
        const end = c.start + c.length;
        if (end <= t0) continue;
        const src = this.assets.get(c.assetId);
        if (!src) continue;
        any = true;
        const sl = src[0]!;
        const sr = src[1] ?? sl;
        const a = Math.max(t0, c.start);
        const b = Math.min(t1, end);
        for (let tf = a; tf < b; tf += 1) {
          const i = tf - c.start;
          const g = clipGainAt(i, c, c.gain);
          const s = c.offset + i;
          bl[tf - t0]! += (sl[s] ?? 0) * g;
          if (t.stereo) br[tf - t0]! += (sr[s] ?? 0) * g;
        }
      }
      if (!any) continue;
      const side = t.stereo ? br : bl;
      // the ramp continues from frame k of this block's start (k counts whole blocks rendered)
      for (let j = 0; j < m; j += 1) {
        const k = t.k + o + j;
        let gl: number;
        let gr: number;
        if (k >= t.len) {
          gl = t.to[0];
          gr = t.to[1];
        } else {
          const f = (k + 1) / t.len;
          gl = t.from[0] + (t.to[0] - t.from[0]) * f;
          gr = t.from[1] + (t.to[1] - t.from[1]) * f;
        }
        left[o + j]! += bl[j]! * gl;
        right[o + j]! += side[j]! * gr;
      }
    }
  }

  private applyEnvelope(left: Float32Array, right: Float32Array): void {
    const step = 1 / this.declickFrames;
    for (let i = 0; i < left.length; i += 1) {
      if (this.env !== this.envTarget) {
        this.env = this.envTarget > this.env ? Math.min(this.envTarget, this.env + step) : Math.max(this.envTarget, this.env - step);
      }
      if (this.env !== 1) {
        left[i]! *= this.env;
        right[i]! *= this.env;
      }
    }
  }

  private measure(left: Float32Array, right: Float32Array): void {
    const sides = [left, right];
    for (let c = 0; c < 2; c += 1) {
      const x = sides[c]!;
      let s = 0;
      let p = this.peaks[c]!;
      for (let i = 0; i < x.length; i += 1) {
        const v = x[i]!;
        s += v * v;
        const a = Math.abs(v);
        if (a > p) p = a;
      }
      this.sum[c]! += s;
      this.peaks[c] = p;
    }
    this.counted += left.length;
    if (this.counted >= this.meterFrames) {
      this.meter = {
        rms: [Math.sqrt(this.sum[0]! / this.counted), Math.sqrt(this.sum[1]! / this.counted)],
        peak: [this.peaks[0]!, this.peaks[1]!],
        frame: this.pos,
        running: this.running,
      };
      this.sum = [0, 0];
      this.peaks = [0, 0];
      this.counted = 0;
    }
  }
}
