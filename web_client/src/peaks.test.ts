import { describe, expect, it } from 'vitest';

import { assetPeakWidth, clipPeaks } from './peaks';

describe('clip peaks', () => {
  // a 4 s asset in 8 slices: loud in the first second, quiet after
  const peaks = { min: [-1, -1, -0.5, -0.5, -0.1, -0.1, 0, 0], max: [1, 1, 0.5, 0.5, 0.1, 0.1, 0, 0] };

  it('slices the clip part of the asset and resamples it', () => {
    expect(clipPeaks(peaks, 4, 0, 4, 8)).toEqual(peaks);
    expect(clipPeaks(peaks, 4, 1, 2, 2)).toEqual({ min: [-0.5, -0.1], max: [0.5, 0.1] });
    // wider than the slices: each slice repeats
    expect(clipPeaks(peaks, 4, 0, 1, 4)).toEqual({ min: [-1, -1, -1, -1], max: [1, 1, 1, 1] });
  });

  it('takes min and max over every slice a column covers', () => {
    expect(clipPeaks(peaks, 4, 0, 4, 2)).toEqual({ min: [-1, -0.1], max: [1, 0.1] });
  });

  it('is silent past the asset end and empty for nothing', () => {
    expect(clipPeaks(peaks, 4, 2.5, 2, 4)).toEqual({ min: [-0.1, 0, 0, 0], max: [0.1, 0, 0, 0] });
    expect(clipPeaks({ min: [], max: [] }, 4, 0, 1, 3)).toEqual({ min: [0, 0, 0], max: [0, 0, 0] });
  });

  it('asks for a resolution that fits the server limit', () => {
    expect(assetPeakWidth(2)).toBe(400);
    expect(assetPeakWidth(3600)).toBe(65536);
    expect(assetPeakWidth(0)).toBe(1000);
  });
});
