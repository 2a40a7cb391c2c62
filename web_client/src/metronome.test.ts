import { describe, expect, it } from 'vitest';

import { clicksAhead } from './metronome';

const times = (cs: { time: number }[]): number[] => cs.map((c) => c.time);

describe('metronome schedule', () => {
  it('clicks on every beat, accenting the first of each bar', () => {
    const cs = clicksAhead(0, 2.1, 120, [4, 4], null);
    expect(times(cs)).toEqual([0, 0.5, 1, 1.5, 2]);
    expect(cs.map((c) => c.accent)).toEqual([true, false, false, false, true]);
    expect(cs.map((c) => c.delay)).toEqual([0, 0.5, 1, 1.5, 2]);
  });

  it('starts at the next beat and never repeats the window end', () => {
    const cs = clicksAhead(0.2, 0.8, 120, [4, 4], null);
    expect(times(cs)).toEqual([0.5]);
    expect(cs[0]?.delay).toBeCloseTo(0.3, 9);
    // adjacent windows share no click
    const a = clicksAhead(0, 0.5, 120, [4, 4], null);
    const b = clicksAhead(0.5, 0.5, 120, [4, 4], null);
    expect(times(a)).toEqual([0]);
    expect(times(b)).toEqual([0.5]);
  });

  it('follows the loop: after its end come the beats from its start', () => {
    const cs = clicksAhead(3.8, 0.8, 120, [4, 4], [2, 4]);
    expect(times(cs)).toEqual([2, 2.5]);
    expect(cs.map((c) => Math.round(c.delay * 1000) / 1000)).toEqual([0.2, 0.7]);
    expect(cs[0]?.accent).toBe(true); // 2 s is the first beat of bar 2
  });

  it('uses the metre: 3/4 accents every third beat, 6/8 counts eighths', () => {
    expect(clicksAhead(0, 3, 120, [3, 4], null).map((c) => c.accent)).toEqual([true, false, false, true, false, false]);
    expect(times(clicksAhead(0, 0.6, 120, [6, 8], null))).toEqual([0, 0.25, 0.5]);
  });
});
