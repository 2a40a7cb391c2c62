import { describe, expect, it } from 'vitest';

import { dropIndex, moveId } from './reorder';

describe('reorder', () => {
  it('moves an id to an index', () => {
    expect(moveId(['a', 'b', 'c', 'd'], 'a', 2)).toEqual(['b', 'c', 'a', 'd']);
    expect(moveId(['a', 'b', 'c', 'd'], 'd', 0)).toEqual(['d', 'a', 'b', 'c']);
    expect(moveId(['a', 'b', 'c'], 'b', 99)).toEqual(['a', 'c', 'b']);
    expect(moveId(['a', 'b', 'c'], 'b', -4)).toEqual(['b', 'a', 'c']);
    expect(moveId(['a', 'b'], 'x', 0)).toEqual(['a', 'b']);
  });

  it('finds the row under the pointer', () => {
    expect(dropIndex(10, 0, 96, 4)).toBe(0);
    expect(dropIndex(200, 0, 96, 4)).toBe(2);
    expect(dropIndex(-50, 0, 96, 4)).toBe(0);
    expect(dropIndex(5000, 0, 96, 4)).toBe(3);
    expect(dropIndex(5000, 0, 96, 0)).toBe(0);
  });
});
