import { describe, expect, it } from 'vitest';

import {
  clampRowShift,
  duplicateStart,
  MIN_CLIP_SECONDS,
  movedStart,
  playedLength,
  trimEnd,
  trimStart,
  UNKNOWN_LENGTH_SECONDS,
} from './clipmath';

describe('played length', () => {
  it('honours length, "to the end" and the asset end', () => {
    expect(playedLength({ start: 0, offset: 0, length: 2 }, 10)).toBe(2);
    expect(playedLength({ start: 0, offset: 9, length: 2 }, 10)).toBe(1);
    expect(playedLength({ start: 0, offset: 3, length: 0 }, 10)).toBe(7);
    expect(playedLength({ start: 0, offset: 3, length: 0 }, null)).toBe(UNKNOWN_LENGTH_SECONDS);
    expect(playedLength({ start: 0, offset: 0, length: 2 }, null)).toBe(2);
  });
});

describe('moving', () => {
  it('snaps the new start and never goes before 0', () => {
    expect(movedStart(1, 0.7, 0.5)).toBe(1.5);
    expect(movedStart(1, 0.7, null)).toBeCloseTo(1.7, 9);
    expect(movedStart(1, -5, 0.5)).toBe(0);
  });

  it('keeps every dragged clip on an existing track', () => {
    expect(clampRowShift(2, [0, 1], 4)).toBe(2);
    expect(clampRowShift(5, [0, 1], 4)).toBe(2);
    expect(clampRowShift(-3, [1, 2], 4)).toBe(-1);
    expect(clampRowShift(1.4, [0], 4)).toBe(1);
    expect(clampRowShift(1, [], 4)).toBe(0);
  });
});

describe('trimming the start', () => {
  const clip = { start: 4, offset: 1, length: 3 }; // plays asset [1, 4) at [4, 7)

  it('moves start and offset together and keeps the end', () => {
    const t = trimStart(clip, 5.1, 0.5, 10);
    expect(t).toEqual({ start: 5, offset: 2, length: 2 });
    expect(t.start + t.length).toBe(7);
    expect(t.start - t.offset).toBe(clip.start - clip.offset); // the audio does not slide
  });

  it('can extend back to the asset start but not before it (offset stays >= 0)', () => {
    expect(trimStart(clip, 3.4, 0.5, 10)).toEqual({ start: 3.5, offset: 0.5, length: 3.5 });
    expect(trimStart(clip, 0, 0.5, 10)).toEqual({ start: 3, offset: 0, length: 4 });
  });

  it('never passes the end or the timeline start', () => {
    const t = trimStart(clip, 100, 0.5, 10);
    expect(t.start + t.length).toBe(7);
    expect(t.length).toBeCloseTo(MIN_CLIP_SECONDS, 4);
    expect(trimStart({ start: 0.5, offset: 3, length: 1 }, -2, null, 10)).toEqual({ start: 0, offset: 2.5, length: 1.5 });
  });

  it('keeps a "to the end" clip of unknown length as "to the end"', () => {
    expect(trimStart({ start: 2, offset: 0, length: 0 }, 3, null, null)).toEqual({ start: 3, offset: 1, length: 0 });
    // with the asset length known, it becomes explicit
    expect(trimStart({ start: 2, offset: 0, length: 0 }, 3, null, 10)).toEqual({ start: 3, offset: 1, length: 9 });
  });
});

describe('trimming the end', () => {
  it('changes only the length, snapped', () => {
    expect(trimEnd({ start: 4, offset: 1, length: 3 }, 6.2, 0.5, 10)).toEqual({ start: 4, offset: 1, length: 2 });
  });

  it('stops at the asset end and at the minimum length', () => {
    expect(trimEnd({ start: 4, offset: 1, length: 3 }, 50, 0.5, 10)).toEqual({ start: 4, offset: 1, length: 9 });
    expect(trimEnd({ start: 4, offset: 1, length: 3 }, 0, 0.5, 10).length).toBeCloseTo(MIN_CLIP_SECONDS, 4);
    // unknown asset length: no upper bound
    expect(trimEnd({ start: 4, offset: 1, length: 3 }, 50, 0.5, null).length).toBe(46);
  });
});

describe('duplicating', () => {
  it('places the copy right after the original', () => {
    expect(duplicateStart({ start: 2, offset: 0, length: 1.5 }, 10)).toBe(3.5);
    expect(duplicateStart({ start: 2, offset: 8, length: 0 }, 10)).toBe(4);
  });
});
