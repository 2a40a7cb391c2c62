import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import {
  addTrackWithClip,
  barBeatLabel,
  beatSeconds,
  dbToFader,
  faderToDb,
  formatDb,
  formatPan,
  gridLines,
  maxPeakDb,
  meterFraction,
  pxToSeconds,
  readClips,
  readTimeSignature,
  readTransport,
  secondsToPx,
  setTransport,
  trackNameFromFile,
  transportPosition,
  waveColumns,
  zoom,
} from './daw';
import { readTracks, sessionMap } from './tracks';

describe('timeline mapping', () => {
  it('maps seconds to pixels and back', () => {
    expect(secondsToPx(2, 40)).toBe(80);
    expect(pxToSeconds(80, 40)).toBe(2);
    expect(pxToSeconds(10, 0)).toBe(0);
    for (const s of [0, 0.25, 3.5, 120]) expect(pxToSeconds(secondsToPx(s, 37), 37)).toBeCloseTo(s, 9);
  });

  it('clamps zoom', () => {
    expect(zoom(40, 1.5)).toBe(60);
    expect(zoom(300, 10)).toBe(400);
    expect(zoom(6, 0.1)).toBe(5);
  });
});

describe('bar/beat grid', () => {
  it('computes beat length from bpm and unit', () => {
    expect(beatSeconds(120)).toBe(0.5);
    expect(beatSeconds(120, 8)).toBe(0.25);
    expect(beatSeconds(0)).toBe(0.5);
  });

  it('lists bars and beats in 4/4 at 120 bpm', () => {
    const lines = gridLines(120, [4, 4], 4, 40);
    expect(lines.map((l) => l.time)).toEqual([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]);
    expect(lines.filter((l) => l.isBar).map((l) => [l.bar, l.x])).toEqual([
      [1, 0],
      [2, 80],
      [3, 160],
    ]);
    expect(lines[5]).toMatchObject({ bar: 2, beat: 2, isBar: false });
  });

  it('handles 3/4 and drops beats when zoomed far out', () => {
    const waltz = gridLines(90, [3, 4], 4, 100).filter((l) => l.isBar);
    expect(waltz.map((l) => l.time)).toEqual([0, 2, 4]);
    const far = gridLines(120, [4, 4], 16, 3);
    expect(far.every((l) => l.isBar)).toBe(true);
    expect(far.map((l) => l.bar)).toEqual([1, 3, 5, 7, 9]);
  });

  it('labels positions as bar.beat', () => {
    expect(barBeatLabel(0, 120, [4, 4])).toBe('1.1');
    expect(barBeatLabel(2.6, 120, [4, 4])).toBe('2.2');
    expect(barBeatLabel(-1, 120, [4, 4])).toBe('1.1');
  });
});

describe('fader law', () => {
  it('puts unity at three quarters and the ends at silence and +6 dB', () => {
    expect(faderToDb(0)).toBe(-144);
    expect(faderToDb(0.75)).toBe(0);
    expect(faderToDb(1)).toBe(6);
    expect(faderToDb(0.5)).toBe(-14.4);
    expect(faderToDb(Number.NaN)).toBe(-144);
    expect(dbToFader(0)).toBe(0.75);
    expect(dbToFader(-200)).toBe(0);
    expect(dbToFader(24)).toBe(1);
  });

  it('round-trips every fader step within 0.1 dB', () => {
    for (let i = 1; i <= 1000; i += 1) {
      const db = faderToDb(i / 1000);
      expect(Math.abs(faderToDb(dbToFader(db)) - db)).toBeLessThanOrEqual(0.1);
    }
  });

  it('formats dB and pan', () => {
    expect(formatDb(-14.4)).toBe('\u221214.4 dB');
    expect(formatDb(3)).toBe('+3.0 dB');
    expect(formatDb(0)).toBe('0.0 dB');
    expect(formatDb(-144)).toBe('\u2212\u221e dB');
    expect(formatPan(0)).toBe('C');
    expect(formatPan(-0.3)).toBe('L30');
    expect(formatPan(1)).toBe('R100');
  });
});

describe('waveform and meters', () => {
  it('scales peaks to canvas columns', () => {
    const cols = waveColumns({ min: [-1, -0.5, 0], max: [1, 0.5, 0] }, 3, 100);
    expect(cols).toEqual([
      { x: 0, y: 0, h: 100 },
      { x: 1, y: 25, h: 50 },
      { x: 2, y: 50, h: 1 },
    ]);
  });

  it('resamples peaks to the canvas width and clamps amplitude', () => {
    const cols = waveColumns({ min: [-2, 0], max: [2, 0] }, 4, 10);
    expect(cols.map((c) => c.h)).toEqual([10, 10, 1, 1]);
    expect(waveColumns({ min: [], max: [] }, 10, 10)).toEqual([]);
  });

  it('maps levels to meter fill', () => {
    expect(meterFraction(null)).toBe(0);
    expect(meterFraction(-60)).toBe(0);
    expect(meterFraction(-30)).toBe(0.5);
    expect(meterFraction(3)).toBe(1);
    expect(maxPeakDb([-12, null, -6])).toBe(-6);
    expect(maxPeakDb([null, null])).toBeNull();
    expect(maxPeakDb('x')).toBeNull();
  });
});

describe('document edits', () => {
  it('adds a track with one clip in one transaction', () => {
    const doc = new Y.Doc();
    let transactions = 0;
    doc.on('afterTransaction', () => (transactions += 1));
    addTrackWithClip(doc, { assetId: 'a1', name: 'Kick loop.wav', duration: 2 }, { track: 't1', clip: 'c1' });
    expect(transactions).toBe(1);
    expect(readTracks(doc).map((t) => [t.id, t.name, t.clipCount])).toEqual([['t1', 'Kick loop', 1]]);
    expect(readClips(doc, 't1')).toEqual([{ id: 'c1', assetId: 'a1', start: 0, offset: 0, length: 2 }]);
  });

  it('names tracks after files', () => {
    expect(trackNameFromFile('Vocals take 3.flac')).toBe('Vocals take 3');
    expect(trackNameFromFile('.wav')).toBe('Audio');
    expect(trackNameFromFile('no-ext')).toBe('no-ext');
  });

  it('plays, stops where it is, and stops again back to zero', () => {
    const doc = new Y.Doc();
    expect(readTransport(doc)).toEqual({ playing: false, startedAt: 0, position: 0, loop: null });
    setTransport(doc, true, 10_000);
    expect(readTransport(doc)).toEqual({ playing: true, startedAt: 10_000, position: 0, loop: null });
    expect(transportPosition(readTransport(doc), 12_500)).toBe(2.5);
    setTransport(doc, false, 12_500);
    expect(readTransport(doc)).toEqual({ playing: false, startedAt: 12_500, position: 2.5, loop: null });
    setTransport(doc, true, 20_000);
    expect(transportPosition(readTransport(doc), 21_000)).toBe(3.5);
    setTransport(doc, false, 21_000);
    setTransport(doc, false, 22_000);
    expect(readTransport(doc).position).toBe(0);
  });

  it('reads the time signature with fallbacks', () => {
    const doc = new Y.Doc();
    expect(readTimeSignature(doc)).toEqual([4, 4]);
    sessionMap(doc).set('timeSignature', [6, 8]);
    expect(readTimeSignature(doc)).toEqual([6, 8]);
    sessionMap(doc).set('timeSignature', [0, 'x']);
    expect(readTimeSignature(doc)).toEqual([4, 4]);
  });
});
