// Which part of the arrangement is on screen, so only those clips get DOM elements
// (a 32-track, 500-clip session keeps a few dozen). Pure.

export interface ViewWindow {
  /** Visible timeline span in lane pixels (margin included). */
  x0: number;
  x1: number;
  /** Visible rows, inclusive (margin included). */
  row0: number;
  row1: number;
}

export interface ScrollBox {
  scrollLeft: number;
  scrollTop: number;
  width: number;
  height: number;
}

/**
 * The window for a scroll box whose content starts with a `headW`-wide sticky header column
 * and a `rulerH`-tall sticky ruler, then rows of `rowH`. The margins extend it sideways
 * (`marginX`) and up and down (`marginY`, default `marginX`) so a short scroll shows clips
 * that are already there.
 */
export function viewWindow(
  box: ScrollBox,
  headW: number,
  rulerH: number,
  rowH: number,
  marginX: number,
  marginY: number = marginX,
): ViewWindow {
  const x0 = box.scrollLeft - marginX;
  const x1 = box.scrollLeft + Math.max(0, box.width - headW) + marginX;
  const top = box.scrollTop - marginY;
  const bottom = box.scrollTop + Math.max(0, box.height - rulerH) + marginY;
  const row0 = Math.max(0, Math.floor(top / rowH));
  const row1 = Math.max(row0, Math.floor(bottom / rowH));
  return { x0, x1, row0, row1 };
}

export function inWindow(w: ViewWindow, row: number, left: number, right: number): boolean {
  return row >= w.row0 && row <= w.row1 && right >= w.x0 && left <= w.x1;
}

/** A window a scroll has not left yet needs no re-render (hysteresis against churn). */
export function contains(outer: ViewWindow, inner: ViewWindow): boolean {
  return inner.x0 >= outer.x0 && inner.x1 <= outer.x1 && inner.row0 >= outer.row0 && inner.row1 <= outer.row1;
}
