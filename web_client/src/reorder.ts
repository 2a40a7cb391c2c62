// Reordering lists by drag: pure index math shared by the track header list.

/** `ids` with `id` moved to `toIndex` (clamped); unchanged when `id` is absent. */
export function moveId(ids: readonly string[], id: string, toIndex: number): string[] {
  const from = ids.indexOf(id);
  if (from < 0) return [...ids];
  const rest = ids.filter((_, i) => i !== from);
  const at = Math.max(0, Math.min(rest.length, Math.round(toIndex)));
  rest.splice(at, 0, id);
  return rest;
}

/**
 * The index a dragged row lands at, for rows of equal height `rowH` starting at `top`, with
 * the pointer at `y`: the row under the pointer's centre line, clamped to the list.
 */
export function dropIndex(y: number, top: number, rowH: number, count: number): number {
  if (count <= 0 || !(rowH > 0)) return 0;
  return Math.max(0, Math.min(count - 1, Math.floor((y - top) / rowH)));
}
