import { describe, expect, it } from 'vitest';

import { Selection } from './selection';

describe('selection', () => {
  it('selects, adds and toggles clips, following the clicked track', () => {
    const s = new Selection();
    s.clickClip({ trackId: 't1', clipId: 'a' }, false);
    s.clickClip({ trackId: 't2', clipId: 'b' }, true);
    expect(s.refs()).toEqual([
      { trackId: 't1', clipId: 'a' },
      { trackId: 't2', clipId: 'b' },
    ]);
    expect(s.track).toBe('t2');
    s.clickClip({ trackId: 't1', clipId: 'a' }, true); // toggles off
    expect(s.toPresence()).toEqual({ clips: ['b'], tracks: ['t1'] });
    s.clickClip({ trackId: 't3', clipId: 'c' }, false); // replaces
    expect(s.refs()).toEqual([{ trackId: 't3', clipId: 'c' }]);
  });

  it('selecting a track drops the clips; clear reports whether anything was selected', () => {
    const s = new Selection();
    s.clickClip({ trackId: 't1', clipId: 'a' }, false);
    s.selectTrack('t2');
    expect(s.toPresence()).toEqual({ clips: [], tracks: ['t2'] });
    expect(s.clear()).toBe(true);
    expect(s.clear()).toBe(false);
  });

  it('follows the document: deleted clips leave, moved clips keep their new track', () => {
    const s = new Selection();
    s.setClips([
      { trackId: 't1', clipId: 'a' },
      { trackId: 't1', clipId: 'b' },
    ]);
    const where: Record<string, string | null> = { a: 't2', b: null };
    expect(s.reconcile((id) => where[id] ?? null, () => true)).toBe(true);
    expect(s.refs()).toEqual([{ trackId: 't2', clipId: 'a' }]);
    expect(s.reconcile((id) => where[id] ?? null, () => true)).toBe(false);
    expect(s.reconcile(() => 't2', (t) => t !== 't1')).toBe(true); // its track went away
    expect(s.track).toBeNull();
  });
});
