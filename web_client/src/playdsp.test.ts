import { describe, expect, it } from 'vitest';

import { PlaybackEngine } from './playdsp';
import type { MixSpec } from './playmath';

const FS = 48000;

/** A mono track playing `asset` from timeline frame 0, at unity on both sides. */
function spec(gains: [number, number] = [1, 1], frames = FS * 4): MixSpec {
  return { rate: FS, tracks: [{ id: 't', stereo: false, gains, clips: [{ assetId: 'a', start: 0, offset: 0, length: frames, fadeIn: 0, fadeOut: 0, gain: 1 }] }] };
}

/** Frame i of the asset holds i / 2^20: the output says which timeline frame played. */
function rampAsset(frames = FS * 4): Float32Array[] {
  return [Float32Array.from({ length: frames }, (_, i) => i / 2 ** 20)];
}

function run(engine: PlaybackEngine, frames: number, block = 128): [Float32Array, Float32Array] {
  const l = new Float32Array(frames);
  const r = new Float32Array(frames);
  for (let s = 0; s < frames; s += block) engine.render(l.subarray(s, s + Math.min(block, frames - s)), r.subarray(s, s + Math.min(block, frames - s)));
  return [l, r];
}

function engineWith(opts: ConstructorParameters<typeof PlaybackEngine>[1] = {}): PlaybackEngine {
  const e = new PlaybackEngine(FS, opts);
  e.setAsset('a', rampAsset());
  e.setMix(spec());
  return e;
}

describe('PlaybackEngine', () => {
  it('plays from the transport frame and fades in over the declick time', () => {
    const e = engineWith({ declickFrames: 240 });
    e.setTransport({ playing: true, frame: 1000, loop: null });
    const [l] = run(e, 1000);
    for (let i = 0; i < 240; i += 1) expect(l[i]).toBeCloseTo(((1000 + i) / 2 ** 20) * ((i + 1) / 240), 9);
    for (let i = 240; i < 1000; i += 1) expect(l[i]).toBe(Math.fround((1000 + i) / 2 ** 20));
  });

  it('is silent while stopped, and a stop fades out then holds', () => {
    const e = engineWith({ declickFrames: 100 });
    expect(run(e, 256)[0].some((v) => v !== 0)).toBe(false);
    e.setTransport({ playing: true, frame: 0, loop: null });
    run(e, 1024);
    e.setTransport({ playing: false, frame: 0, loop: null });
    const [l] = run(e, 1024);
    // falls to zero within 100 frames without a step larger than the fade's
    for (let i = 1; i < 100; i += 1) expect(Math.abs(l[i]!)).toBeLessThanOrEqual(Math.abs(l[i - 1]!) + 1e-6);
    expect(l.subarray(100).some((v) => v !== 0)).toBe(false);
  });

  it('wraps at the loop end, mid-block', () => {
    const e = engineWith({ declickFrames: 1 });
    e.setTransport({ playing: true, frame: 150, loop: [100, 200] });
    const [l] = run(e, 200, 64);
    const played = [...l].map((v) => Math.round(v * 2 ** 20));
    const want = [...Array.from({ length: 50 }, (_, i) => 150 + i), ...Array.from({ length: 100 }, (_, i) => 100 + i), ...Array.from({ length: 50 }, (_, i) => 100 + i)];
    expect(played).toEqual(want);
  });

  it('a seek fades out, jumps (keeping time) and fades back in', () => {
    const e = engineWith({ declickFrames: 64 });
    e.setTransport({ playing: true, frame: 0, loop: null });
    run(e, 1024);
    e.setTransport({ playing: true, frame: 96000, loop: null });
    const [l] = run(e, 1024);
    // the old position fades out during the first block, the new one fades in after it
    expect(Math.round((l[0]! / (63 / 64)) * 2 ** 20)).toBe(1024);
    expect(l.subarray(64, 128).some((v) => v !== 0)).toBe(false);
    expect(Math.round(l[1023]! * 2 ** 20)).toBe(96000 + 1023);
    expect(Math.round(l[300]! * 2 ** 20)).toBe(96000 + 300);
  });

  it('ignores a re-sync within the tolerance (clock jitter is no jump)', () => {
    const e = engineWith({ declickFrames: 64, toleranceFrames: 480 });
    e.setTransport({ playing: true, frame: 0, loop: null });
    run(e, 1024);
    e.setTransport({ playing: true, frame: 1024 + 300, loop: null });
    const [l] = run(e, 128);
    expect(Math.round(l[0]! * 2 ** 20)).toBe(1024);
  });

  it('ramps a gain change linearly over 10 ms, as the server does', () => {
    const e = new PlaybackEngine(FS, { declickFrames: 1 });
    e.setAsset('a', [new Float32Array(FS).fill(0.5)]);
    e.setMix(spec([1, 1], FS));
    e.setTransport({ playing: true, frame: 0, loop: null });
    run(e, 1000);
    e.setMix(spec([0, 0.25], FS)); // e.g. muted on the left, turned down on the right
    const [l, r] = run(e, 1000);
    for (let n = 0; n < 480; n += 1) {
      expect(l[n]).toBeCloseTo(0.5 * (1 - (n + 1) / 480), 6);
      expect(r[n]).toBeCloseTo(0.5 * (1 + (0.25 - 1) * ((n + 1) / 480)), 6);
    }
    expect(l.subarray(480).some((v) => v !== 0)).toBe(false);
    expect(r[999]).toBe(0.125);
  });

  it('posts RMS and peak meters per window', () => {
    const e = new PlaybackEngine(FS, { declickFrames: 1, meterFrames: 1024 });
    e.setAsset('a', [new Float32Array(FS).fill(0.5)]);
    e.setMix(spec([0.5, 0.25], FS));
    e.setTransport({ playing: true, frame: 0, loop: null });
    run(e, 1024);
    const m = e.takeMeter();
    expect(m?.rms[0]).toBeCloseTo(0.25, 6);
    expect(m?.rms[1]).toBeCloseTo(0.125, 6);
    expect(m?.peak).toEqual([0.25, 0.125]);
    expect(m?.running).toBe(true);
    expect(e.takeMeter()).toBeNull();
  });

  it('refuses a bad sample rate and an empty asset', () => {
    expect(() => new PlaybackEngine(0)).toThrow(/sample rate/);
    expect(() => new PlaybackEngine(FS).setAsset('x', [])).toThrow(/no channels/);
  });
});
