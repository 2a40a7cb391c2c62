// Clip geometry for moves and trims (docs/session-schema.md, "Clips"): the asset's seconds
// [offset, offset + length) play at timeline seconds [start, start + length); `length` 0 plays
// to the asset's end; a clip never plays past its asset's end. Pure functions.

import { snapTime, toFrameGrid } from './snap';

export interface ClipGeom {
  start: number;
  offset: number;
  /** As stored: 0 means "to the end of the asset". */
  length: number;
}

/** Shortest clip a trim can leave. */
export const MIN_CLIP_SECONDS = 0.01;
/** Drawn length of a "to the end" clip whose asset length is not known yet. */
export const UNKNOWN_LENGTH_SECONDS = 4;

/** How long the clip really plays, given the asset's duration when known. */
export function playedLength(clip: ClipGeom, assetSeconds: number | null): number {
  const rest = assetSeconds === null ? null : Math.max(0, assetSeconds - clip.offset);
  if (clip.length > 0) return rest === null ? clip.length : Math.min(clip.length, rest);
  return rest ?? UNKNOWN_LENGTH_SECONDS;
}

/** New start for a clip dragged by `delta` seconds: snapped, never before 0. */
export function movedStart(start: number, delta: number, step: number | null): number {
  return Math.max(0, snapTime(start + delta, step));
}

/**
 * A track-index shift that keeps every dragged clip on an existing track: the pointer's row
 * shift, clamped by the topmost and bottommost rows in the selection.
 */
export function clampRowShift(shift: number, rows: readonly number[], trackCount: number): number {
  if (rows.length === 0 || trackCount <= 0) return 0;
  const lo = Math.min(...rows);
  const hi = Math.max(...rows);
  return Math.min(trackCount - 1 - hi, Math.max(-lo, Math.round(shift)));
}

/**
 * Trim the clip's start edge to `newStart` (then snapped): the end stays put, `offset` moves
 * with the start so the audio under the clip does not slide. The start cannot pass the
 * asset's first frame (offset ≥ 0), the timeline's 0, or the end minus the minimum length.
 */
export function trimStart(clip: ClipGeom, newStart: number, step: number | null, assetSeconds: number | null): ClipGeom {
  const len = playedLength(clip, assetSeconds);
  const end = clip.start + len;
  const lo = Math.max(0, clip.start - clip.offset);
  const hi = end - MIN_CLIP_SECONDS;
  if (hi <= lo) return { ...clip };
  const s = toFrameGrid(Math.min(hi, Math.max(lo, snapTime(newStart, step))));
  const moved = s - clip.start;
  const offset = toFrameGrid(Math.max(0, clip.offset + moved));
  // a "to the end" clip of unknown length stays "to the end"
  const length = clip.length === 0 && assetSeconds === null ? 0 : toFrameGrid(end - s);
  return { start: s, offset, length };
}

/**
 * Trim the clip's end edge to `newEnd` (then snapped): start and offset stay; the end cannot
 * go before start + the minimum length, nor past the asset's end when its length is known.
 */
export function trimEnd(clip: ClipGeom, newEnd: number, step: number | null, assetSeconds: number | null): ClipGeom {
  const lo = clip.start + MIN_CLIP_SECONDS;
  const hi = assetSeconds === null ? Number.POSITIVE_INFINITY : clip.start + Math.max(0, assetSeconds - clip.offset);
  if (hi < lo) return { ...clip };
  const e = Math.min(hi, Math.max(lo, snapTime(newEnd, step)));
  return { start: clip.start, offset: clip.offset, length: toFrameGrid(e - clip.start) };
}

/** Where a duplicate goes: right after the original, on the same track. */
export function duplicateStart(clip: ClipGeom, assetSeconds: number | null): number {
  return toFrameGrid(clip.start + playedLength(clip, assetSeconds));
}
