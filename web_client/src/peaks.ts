// Waveform peaks for clips. The server gives an asset's min/max peaks over its whole length
// (`/api/assets/{id}/peaks?width=N`); a clip shows only its [offset, offset + length) slice,
// resampled to its width in pixels. Pure.

import type { Peaks } from './daw';

/** Peak columns per second of audio fetched per asset (one fetch serves every clip and zoom). */
export const PEAKS_PER_SECOND = 200;
export const MAX_PEAK_WIDTH = 65536;

/** The `width` to ask the server for, for an asset of this many seconds. */
export function assetPeakWidth(seconds: number): number {
  if (!(seconds > 0)) return 1000;
  return Math.max(1, Math.min(MAX_PEAK_WIDTH, Math.ceil(seconds * PEAKS_PER_SECOND)));
}

/**
 * The peaks of asset seconds [offset, offset + length) in `width` columns: each column is the
 * min/max of the slices it covers; past the asset's end it is silence.
 */
export function clipPeaks(peaks: Peaks, assetSeconds: number, offset: number, length: number, width: number): Peaks {
  const n = Math.min(peaks.min.length, peaks.max.length);
  const w = Math.max(0, Math.round(width));
  const min = new Array<number>(w).fill(0);
  const max = new Array<number>(w).fill(0);
  if (n === 0 || !(assetSeconds > 0) || !(length > 0)) return { min, max };
  const perSlice = assetSeconds / n;
  for (let x = 0; x < w; x += 1) {
    const t0 = offset + (x * length) / w;
    const t1 = offset + ((x + 1) * length) / w;
    if (t0 >= assetSeconds) break;
    const i0 = Math.max(0, Math.floor(t0 / perSlice));
    const i1 = Math.min(n, Math.max(i0 + 1, Math.ceil(t1 / perSlice)));
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = i0; i < i1; i += 1) {
      lo = Math.min(lo, peaks.min[i] ?? 0);
      hi = Math.max(hi, peaks.max[i] ?? 0);
    }
    min[x] = lo === Infinity ? 0 : lo;
    max[x] = hi === -Infinity ? 0 : hi;
  }
  return { min, max };
}
