import { describe, expect, it } from 'vitest';

import { contains, inWindow, viewWindow } from './viewport';

describe('view window', () => {
  const box = { scrollLeft: 1000, scrollTop: 200, width: 1300, height: 500 };

  it('covers the visible lanes and rows plus a margin', () => {
    const w = viewWindow(box, 300, 26, 96, 100);
    expect(w).toEqual({ x0: 900, x1: 2100, row0: 1, row1: 8 }); // rows 100..774 px
    expect(inWindow(w, 3, 2000, 2200)).toBe(true);
    expect(inWindow(w, 3, 2101, 2200)).toBe(false);
    expect(inWindow(w, 3, 0, 899)).toBe(false);
    expect(inWindow(w, 0, 1000, 1100)).toBe(false);
    expect(inWindow(w, 9, 1000, 1100)).toBe(false);
  });

  it('clamps at the top and knows when a window is inside another', () => {
    const top = viewWindow({ ...box, scrollTop: 0 }, 300, 26, 96, 100);
    expect(top.row0).toBe(0);
    const wide = viewWindow(box, 300, 26, 96, 400);
    expect(contains(wide, viewWindow({ ...box, scrollLeft: 1100 }, 300, 26, 96, 100))).toBe(true);
    expect(contains(wide, viewWindow({ ...box, scrollLeft: 2000 }, 300, 26, 96, 100))).toBe(false);
  });

  it('takes separate margins across and down', () => {
    expect(viewWindow(box, 300, 26, 96, 100, 0)).toEqual({ x0: 900, x1: 2100, row0: 2, row1: 7 });
  });
});
