import { describe, expect, it } from 'vitest';

import { cursorTime, readPeers, selectionsByOthers, userColor } from './presence';
import { PALETTE } from './tracks';

describe('presence', () => {
  it('reads and validates awareness states, self first', () => {
    const states = new Map<number, unknown>([
      [7, { user: { name: 'Zoe', color: '#61afef' }, selection: { clips: ['c1', 'bad id!'], tracks: ['t1'] }, cursor: { time: 3.5, trackId: 't1' } }],
      [3, { user: { name: 'Me', color: '#e06c75' } }],
      [9, { user: { name: 'Al\u0000ice', color: 'url(javascript:x)' }, cursor: { time: -1 }, activity: 'uploading' }],
      [0, { meters: {} }], // the server's state: no user
      [4, 'garbage'],
    ]);
    const peers = readPeers(states, 3);
    expect(peers.map((p) => [p.clientId, p.name, p.self])).toEqual([
      [3, 'Me', true],
      [9, 'Alice', false],
      [7, 'Zoe', false],
    ]);
    const zoe = peers[2]!;
    expect(zoe).toMatchObject({ clips: ['c1'], tracks: ['t1'], cursor: 3.5, cursorTrack: 't1', color: '#61afef' });
    const alice = peers[1]!;
    expect(alice).toMatchObject({ color: '#888888', cursor: null, activity: 'uploading', clips: [] });
  });

  it("maps others' selections by id", () => {
    const peers = readPeers(
      new Map<number, unknown>([
        [1, { user: { name: 'A', color: '#111111' }, selection: { clips: ['c1'], tracks: [] } }],
        [2, { user: { name: 'B', color: '#222222' }, selection: { clips: ['c1', 'c2'], tracks: ['t9'] } }],
      ]),
      1,
    );
    const { clips, tracks } = selectionsByOthers(peers);
    expect(clips.get('c1')?.map((p) => p.name)).toEqual(['B']);
    expect(clips.get('c2')?.map((p) => p.name)).toEqual(['B']);
    expect(tracks.get('t9')?.map((p) => p.name)).toEqual(['B']);
  });

  it('gives a stable palette colour per user and rounds cursors', () => {
    expect(userColor('u1')).toBe(userColor('u1'));
    expect(PALETTE).toContain(userColor('someone else'));
    expect(cursorTime(1.23456)).toBe(1.23);
    expect(cursorTime(-2)).toBe(0);
  });
});
