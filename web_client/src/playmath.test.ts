// The browser's mix rules against the server's: the expected numbers and cases are the ones of
// tests/dsp/test_units.py and tests/dsp/test_graph.py, so both sides are held to the same values.

import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import { PlaybackEngine } from './playdsp';
import {
  audibility,
  buildMix,
  clipFrames,
  dbToGain,
  levelDb,
  loopFrames,
  neededAssets,
  panGains,
  readPlayModel,
  roundHalfEven,
  routing,
  stripGains,
  wrapFrame,
  type AssetInfo,
  type PlayClip,
  type PlayModel,
  type PlayTrack,
} from './playmath';

const FS = 48000;

function track(id: string, clips: PlayClip[] = [], fields: Partial<PlayTrack> = {}): PlayTrack {
  return { id, kind: 'audio', gainDb: 0, pan: 0, mute: false, solo: false, output: null, phaseInvert: false, clips, ...fields };
}

function clip(assetId: string, start = 0, fields: Partial<PlayClip> = {}): PlayClip {
  return { id: fields.id ?? 'c', assetId, start, offset: 0, length: 0, gainDb: 0, fadeIn: 0, fadeOut: 0, ...fields };
}

function full(channels: number, frames: number, value: number): Float32Array[] {
  return Array.from({ length: channels }, () => new Float32Array(frames).fill(value));
}

/** Render `frames` timeline frames from 0 through the engine, as the Python tests' `render`. */
function render(model: PlayModel, assets: Record<string, Float32Array[]>, frames: number, block = 1000): [Float32Array, Float32Array] {
  const engine = new PlaybackEngine(FS, { declickFrames: 1 });
  for (const [id, ch] of Object.entries(assets)) engine.setAsset(id, ch);
  const info = (id: string): AssetInfo | null => {
    const a = assets[id];
    return a ? { frames: a[0]!.length, channels: a.length } : null;
  };
  engine.setMix(buildMix(model, info, FS));
  engine.setTransport({ playing: true, frame: 0, loop: null });
  const left = new Float32Array(frames);
  const right = new Float32Array(frames);
  for (let s = 0; s < frames; s += block) {
    const n = Math.min(block, frames - s);
    engine.render(left.subarray(s, s + n), right.subarray(s, s + n));
  }
  return [left, right];
}

function unique(x: Float32Array): number[] {
  return [...new Set(x)].sort((a, b) => a - b);
}

describe('levels and pan law (test_units.py)', () => {
  it.each([
    [0, 1],
    [20, 10],
    [-20, 0.1],
    [-6.020599913279624, 0.5],
    [6.020599913279624, 2],
  ])('%f dB is a gain of %f', (db, gain) => {
    expect(dbToGain(db)).toBeCloseTo(gain, 12);
  });

  it('is exactly silent at or below -144 dB', () => {
    expect(dbToGain(-Infinity)).toBe(0);
    expect(dbToGain(-144)).toBe(0);
    expect(dbToGain(-200)).toBe(0);
    expect(dbToGain(-143.9)).toBeGreaterThan(0);
    expect(() => dbToGain(NaN)).toThrow(/NaN/);
  });

  it('pans with constant power, -3 dB at the centre, exact at the ends', () => {
    const [l, r] = panGains(0);
    expect(l).toBeCloseTo(Math.sqrt(0.5), 15);
    expect(r).toBeCloseTo(Math.sqrt(0.5), 15);
    expect(20 * Math.log10(l)).toBeCloseTo(-3.0103, 4);
    for (let p = -1; p <= 1.0001; p += 0.1) {
      const [a, b] = panGains(Math.min(1, p));
      expect(a * a + b * b).toBeCloseTo(1, 12);
    }
    expect(panGains(-1)).toEqual([1, 0]);
    expect(panGains(1)).toEqual([0, 1]);
    expect(() => panGains(1.5)).toThrow(/pan/);
    expect(() => panGains(NaN)).toThrow(/pan/);
  });

  it('strip gains: balance law for stereo, constant power for mono (test_strip_gains)', () => {
    expect(stripGains(0, 0, true)).toEqual([1, 1]);
    const [l, r] = stripGains(0, 0, false);
    expect(l).toBeCloseTo(Math.sqrt(0.5), 15);
    expect(r).toBeCloseTo(Math.sqrt(0.5), 15);
    expect(stripGains(-6, -1, true)).toEqual([dbToGain(-6), 0]);
  });

  it('shows levels in dBFS, silence as -inf', () => {
    expect(levelDb(0.5 / Math.SQRT2)).toBe('-9.0');
    expect(levelDb(1)).toBe('0.0');
    expect(levelDb(0)).toBe('-inf');
  });
});

describe('clips in frames (test_graph.py)', () => {
  it('rounds half to even like Python', () => {
    expect([0.5, 1.5, 2.5, 3.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, 4, 2, 3]);
  });

  it('places, cuts and fades clips as clip_frames does', () => {
    expect(clipFrames(1, 0.5, 0, 0, 0, FS * 2, FS)).toEqual({ start: 48000, offset: 24000, length: 72000, fadeIn: 0, fadeOut: 0 });
    expect(clipFrames(0, 0, 10, 0, 0, 1000, FS)?.length).toBe(1000); // longer than its asset: cut
    expect(clipFrames(0, 1, 0, 0, 0, 1000, FS)).toBeNull(); // offset past the end
    const c = clipFrames(0, 0, 0.01, 1, 1, 48000, FS); // fades cut to the clip
    expect([c?.length, c?.fadeIn, c?.fadeOut]).toEqual([480, 480, 480]);
  });

  it.each([
    [0, 0, 0],
    [0.5, 0, 100],
    [1.25, 0.1, 4800],
    [0.01, 0.2, 12000],
    [2 / 48000, 0, 0],
  ])('puts a clip at %f s (offset %f) to the sample', (start, offset, k) => {
    for (const block of [100, 1024]) {
      const asset = full(2, 24000, 0);
      asset[0]![k] = 0.5;
      asset[1]![k] = 0.5;
      const [l, r] = render({ tracks: [track('t', [clip('a', start, { offset })])], masterGainDb: 0 }, { a: asset }, 96000, block);
      const expected = Math.round(start * FS) + (k - Math.round(offset * FS));
      const hits = [...l.keys()].filter((i) => l[i] !== 0);
      expect(hits).toEqual([expected]);
      expect(l[expected]).toBe(0.5);
      expect(r[expected]).toBe(0.5);
    }
  });

  it('plays the asset range [offset, offset + length)', () => {
    const asset = [Float32Array.from({ length: 1000 }, (_, i) => (i + 1) / 2048)];
    const [l] = render({ tracks: [track('t', [clip('a', 0.001, { offset: 0.002, length: 0.003 })])], masterGainDb: 0 }, { a: asset }, 600);
    const g = panGains(0)[0];
    const nz = [...l.keys()].filter((i) => l[i] !== 0);
    expect([nz[0], nz[nz.length - 1]]).toEqual([48, 48 + 144 - 1]);
    for (let i = 0; i < 144; i += 1) expect(l[48 + i]! / g).toBeCloseTo(asset[0]![96 + i]!, 6);
  });

  it('fades and clip gain are linear ramps', () => {
    const ones = full(2, 10000, 1);
    const model = { tracks: [track('t', [clip('a', 0, { length: 0.1, fadeIn: 0.01, fadeOut: 0.02, gainDb: -6 })])], masterGainDb: 0 };
    for (const block of [64, 1000]) {
      const [l] = render(model, { a: ones }, 5000, block);
      for (let n = 0; n < 4800; n += 1) {
        const expected = Math.min(1, n / 480) * Math.min(1, (4800 - 1 - n) / 960) * dbToGain(-6);
        expect(Math.abs(l[n]! - expected)).toBeLessThanOrEqual(1e-7 + 1e-6 * expected);
      }
      expect(l[0]).toBe(0);
      expect(l[4799]).toBe(0);
      expect(l.subarray(4800).some((v) => v !== 0)).toBe(false);
    }
  });

  it('overlapping clips sum', () => {
    const model = { tracks: [track('t', [clip('a', 0, { id: '1' }), clip('b', 0.05, { id: '2' })])], masterGainDb: 0 };
    const [l] = render(model, { a: full(2, 4800, 0.25), b: full(2, 4800, 0.125) }, 9600);
    expect(unique(l.subarray(0, 2400))).toEqual([0.25]);
    expect(unique(l.subarray(2400, 4800))).toEqual([0.375]);
    expect(unique(l.subarray(4800, 7200))).toEqual([0.125]);
    expect(unique(l.subarray(7200))).toEqual([0]);
  });

  it('a stereo clip makes the track stereo (mono clips feed both sides at unity)', () => {
    const model = { tracks: [track('t', [clip('m', 0, { id: '1' }), clip('s', 0, { id: '2' })])], masterGainDb: 0 };
    const [l, r] = render(model, { m: full(1, 1000, 0.5), s: full(2, 1000, 0.25) }, 1000);
    expect(unique(l)).toEqual([0.75]);
    expect(unique(r)).toEqual([0.75]);
  });

  it.each([-1, -0.5, 0, 0.3, 1])('pan laws at %f: constant power mono, balance stereo', (pan) => {
    const cp = panGains(pan);
    const [ml, mr] = render({ tracks: [track('t', [clip('m')], { pan })], masterGainDb: 0 }, { m: full(1, 2000, 0.5) }, 2000);
    expect(ml[1000]).toBeCloseTo(Math.fround(0.5 * cp[0]), 6);
    expect(mr[1000]).toBeCloseTo(Math.fround(0.5 * cp[1]), 6);
    const [sl, sr] = render({ tracks: [track('t', [clip('s')], { pan })], masterGainDb: 0 }, { s: full(2, 2000, 0.5) }, 2000);
    const balance = [Math.min(1, Math.SQRT2 * cp[0]), Math.min(1, Math.SQRT2 * cp[1])];
    expect(sl[1000]).toBeCloseTo(0.5 * balance[0]!, 6);
    expect(sr[1000]).toBeCloseTo(0.5 * balance[1]!, 6);
    expect(Math.max(...balance)).toBe(1);
  });
});

describe('routing, mute and solo (test_graph.py)', () => {
  const LEVELS: Record<string, number> = { a: 2 ** -3, b: 2 ** -4, c: 2 ** -5 }; // distinct bits: the sum says who is heard
  type Flags = Record<string, [boolean, boolean]>; // id → (solo, mute)

  function routingModel(flags: Flags): PlayModel {
    const t = (id: string, fields: Partial<PlayTrack> = {}): PlayTrack =>
      track(id, id in LEVELS ? [clip(id)] : [], { solo: flags[id]![0], mute: flags[id]![1], ...fields });
    return { tracks: [t('a'), t('b'), t('c', { output: 'x' }), t('x', { kind: 'bus' })], masterGainDb: 0 };
  }

  /** The DAW rules, written out for this layout independently of the code (as in the Python test). */
  function expectedHeard(flags: Flags): Set<string> {
    const solo = (k: string): boolean => flags[k]![0];
    const mute = (k: string): boolean => flags[k]![1];
    const anySolo = Object.keys(flags).some(solo);
    const audible = (node: string): boolean => {
      if (mute(node)) return false;
      if (!anySolo) return true;
      if (node === 'x') return solo('x') || solo('c');
      return solo(node) || (node === 'c' && solo('x'));
    };
    const heard = new Set(['a', 'b'].filter(audible));
    if (audible('c') && audible('x')) heard.add('c');
    return heard;
  }

  const STATES: [boolean, boolean][] = [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ];

  it('matches the truth table for all 256 combinations', () => {
    const assets = Object.fromEntries(Object.entries(LEVELS).map(([k, v]) => [k, full(2, 256, v)]));
    let checked = 0;
    for (const sa of STATES)
      for (const sb of STATES)
        for (const sc of STATES)
          for (const sx of STATES) {
            const flags: Flags = { a: sa, b: sb, c: sc, x: sx };
            const heard = expectedHeard(flags);
            const expected = Math.fround([...heard].reduce((s, k) => s + LEVELS[k]!, 0));
            const [l, r] = render(routingModel(flags), assets, 256, 256);
            expect(unique(l), JSON.stringify(flags)).toEqual([expected]);
            expect(unique(r)).toEqual([expected]);
            checked += 1;
          }
    expect(checked).toBe(256);
  });

  it('buses sum their inputs, then their fader and pan apply', () => {
    const model: PlayModel = {
      tracks: [
        track('a', [clip('a')], { output: 'bus1' }),
        track('b', [clip('b')], { output: 'bus1' }),
        track('bus1', [], { kind: 'bus', gainDb: -6, output: 'bus2' }),
        track('bus2', [], { kind: 'bus', pan: -1 }),
      ],
      masterGainDb: 0,
    };
    const [l, r] = render(model, { a: full(2, 2000, 0.25), b: full(2, 2000, 0.125) }, 2000);
    for (const v of unique(l)) expect(v).toBeCloseTo(0.375 * dbToGain(-6), 6);
    expect(unique(r)).toEqual([0]);
  });

  it('routing cycles and outputs that are not buses go to the master', () => {
    const model: PlayModel = {
      tracks: [
        track('a', [clip('a')], { output: 'x' }),
        track('x', [], { kind: 'bus', output: 'y' }),
        track('y', [], { kind: 'bus', output: 'x' }),
        track('b', [clip('a')], { output: 'nope' }),
        track('c', [clip('a')], { output: 'b' }), // not a bus
      ],
      masterGainDb: 0,
    };
    const dest = routing(model.tracks);
    expect(Object.fromEntries(dest)).toEqual({ a: 'x', x: 'y', y: null, b: null, c: null });
    const [l] = render(model, { a: full(2, 500, 0.25) }, 500);
    expect(unique(l)).toEqual([0.75]);
  });

  it('mute wins over solo, and a soloed bus makes what feeds it audible', () => {
    const tracks = [track('a', [], { solo: true, mute: true }), track('b'), track('c', [], { output: 'x' }), track('x', [], { kind: 'bus', solo: true })];
    expect(Object.fromEntries(audibility(tracks))).toEqual({ a: false, b: false, c: true, x: true });
  });
});

describe('the document and the mix spec', () => {
  it('reads tracks as the server schema does: clamped numbers, outputs, kinds, master gain', () => {
    const doc = new Y.Doc();
    doc.getMap('session').set('master', { gainDb: -3 });
    const tracks = doc.getMap<Y.Map<unknown>>('tracks');
    const a = new Y.Map<unknown>();
    a.set('gainDb', 40);
    a.set('pan', -3);
    a.set('output', 'master');
    a.set('phaseInvert', true);
    a.set('kind', 'weird');
    const clips = new Y.Map<unknown>();
    clips.set('c2', { assetId: 'x', start: 2, fadeIn: -1 });
    clips.set('c1', { assetId: 'x', start: 1, gainDb: -500 });
    clips.set('bad', { start: 0 });
    a.set('clips', clips);
    tracks.set('a', a);
    const m = new Y.Map<unknown>();
    m.set('kind', 'midi');
    m.set('output', 'm');
    tracks.set('m', m);
    doc.getArray('trackOrder').push(['m', 'a', 'a']);
    const model = readPlayModel(doc);
    expect(model.masterGainDb).toBe(-3);
    expect(model.tracks.map((t) => t.id)).toEqual(['m', 'a']);
    const ta = model.tracks[1]!;
    expect([ta.kind, ta.gainDb, ta.pan, ta.output, ta.phaseInvert]).toEqual(['audio', 24, -1, null, true]);
    expect(ta.clips.map((c) => [c.id, c.start, c.gainDb, c.fadeIn])).toEqual([
      ['c1', 1, -144, 0],
      ['c2', 2, 0, 0],
    ]);
    expect(model.tracks[0]!.output).toBeNull(); // its own id
    expect(neededAssets(model)).toEqual(['x']); // MIDI clips are not audio
  });

  it('builds per-track gains with polarity, master gain, and skips undecoded assets', () => {
    const model: PlayModel = {
      tracks: [track('a', [clip('x')], { phaseInvert: true, gainDb: -6 }), track('b', [clip('missing')]), track('bus', [clip('x')], { kind: 'bus' })],
      masterGainDb: -6,
    };
    const spec = buildMix(model, (id) => (id === 'x' ? { frames: 100, channels: 2 } : null), FS);
    expect(spec.tracks.map((t) => t.id)).toEqual(['a']);
    const t = spec.tracks[0]!;
    expect(t.stereo).toBe(true);
    expect(t.gains[0]).toBeCloseTo(-dbToGain(-6) * dbToGain(-6), 12);
    expect(t.clips[0]).toMatchObject({ start: 0, offset: 0, length: 100, gain: 1 });
  });

  it('wraps frames into the loop once they reach its end', () => {
    expect(wrapFrame(150, [100, 200])).toBe(150);
    expect(wrapFrame(50, [100, 200])).toBe(50);
    expect(wrapFrame(200, [100, 200])).toBe(100);
    expect(wrapFrame(345, [100, 200])).toBe(145);
    expect(loopFrames([1, 2], FS)).toEqual([48000, 96000]);
    expect(loopFrames(null, FS)).toBeNull();
  });
});
