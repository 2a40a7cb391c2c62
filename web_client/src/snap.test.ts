import { describe, expect, it } from 'vitest';

import { snapEnabled, snapStep, snapTime, toFrameGrid } from './snap';

describe('snap step follows tempo, metre and zoom', () => {
  it('snaps to beats at the default zoom (120 bpm, 40 px/s: a beat is 20 px)', () => {
    expect(snapStep(120, [4, 4], 40)).toBe(0.5);
  });

  it('gets finer when zoomed in and coarser (whole bars) when zoomed out', () => {
    expect(snapStep(120, [4, 4], 400)).toBe(0.0625); // 1/8 beat = 25 px
    expect(snapStep(120, [4, 4], 10)).toBe(2); // beat 5 px -> bar (4 beats) 20 px
    expect(snapStep(120, [4, 4], 5)).toBe(4); // bar 10 px -> 2 bars 20 px
    expect(snapStep(120, [3, 4], 12)).toBe(1.5); // a 3/4 bar, 18 px
    expect(snapStep(120, [3, 4], 10)).toBe(3); // 15 px is too fine: two bars
  });

  it('uses the time signature unit for the beat (6/8: eighths)', () => {
    expect(snapStep(120, [6, 8], 80)).toBe(0.25);
  });

  it('rounds to the nearest grid line and to the 48 kHz frame grid', () => {
    expect(snapTime(1.26, 0.5)).toBe(1.5);
    expect(snapTime(1.24, 0.5)).toBe(1);
    expect(snapTime(0.1, 0.5)).toBe(0);
    expect(snapTime(1.0000001, null)).toBe(toFrameGrid(1.0000001));
    expect(Math.round(snapTime(1 / 3, null) * 48000)).toBe(16000);
    // at 97 bpm beats are not whole frames: the snapped time still is
    const t = snapTime(3.3, snapStep(97, [4, 4], 40));
    expect(Number.isInteger(Math.round(t * 48000 * 1e6) / 1e6)).toBe(true);
  });

  it('is disabled by the setting or while Alt or Shift is held', () => {
    expect(snapEnabled(true, { altKey: false, shiftKey: false })).toBe(true);
    expect(snapEnabled(true, { altKey: true, shiftKey: false })).toBe(false);
    expect(snapEnabled(true, { altKey: false, shiftKey: true })).toBe(false);
    expect(snapEnabled(false, { altKey: false, shiftKey: false })).toBe(false);
  });
});
