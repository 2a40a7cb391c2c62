// Snapping to the bar/beat grid computed from the document's bpm and time signature.
// The snap step follows the zoom (as in most DAWs): the finest musical division that is still
// at least `minPx` wide on screen, from a sixteenth of a beat up to whole groups of bars.

import { beatSeconds } from './daw';

/** Positions are stored on the 48 kHz frame grid (docs/session-schema.md). */
export const SAMPLE_RATE = 48000;

/** Beat fractions, then whole bars (negative = that many bars), finest first. */
const DIVISIONS: readonly number[] = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1];
const BAR_MULTIPLES: readonly number[] = [1, 2, 4, 8, 16, 32, 64];

/** The snap step in seconds for this tempo, metre and zoom. */
export function snapStep(
  bpm: number,
  timeSignature: readonly [number, number],
  pxPerSecond: number,
  minPx = 16,
): number {
  const beat = beatSeconds(bpm, timeSignature[1]);
  const pps = pxPerSecond > 0 ? pxPerSecond : 1;
  for (const d of DIVISIONS) if (beat * d * pps >= minPx) return beat * d;
  const bar = beat * Math.max(1, Math.trunc(timeSignature[0]) || 4);
  for (const m of BAR_MULTIPLES) if (bar * m * pps >= minPx) return bar * m;
  return bar * (BAR_MULTIPLES[BAR_MULTIPLES.length - 1] ?? 64);
}

/** Round seconds to the nearest 48 kHz frame (round half to even is the server's business). */
export function toFrameGrid(seconds: number): number {
  return Math.round(seconds * SAMPLE_RATE) / SAMPLE_RATE;
}

/** The nearest grid line to `seconds` (grid from 0), or the frame-rounded time when `step` is null. */
export function snapTime(seconds: number, step: number | null): number {
  if (step === null || !(step > 0)) return toFrameGrid(seconds);
  return toFrameGrid(Math.round(seconds / step) * step);
}

/** Snapping applies unless the person holds Alt or Shift, or switched it off. */
export function snapEnabled(setting: boolean, mods: { altKey: boolean; shiftKey: boolean }): boolean {
  return setting && !mods.altKey && !mods.shiftKey;
}
