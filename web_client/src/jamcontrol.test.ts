import { describe, expect, it } from 'vitest';

import { jamCloseMessage, jamUrl, jitterMessage, joinMessage, mixMessage, parseServerMessage, pingMessage, RateMeter } from './jamcontrol';

describe('jam control messages', () => {
  it('joins with PCM16 and the given channels', () => {
    expect(JSON.parse(joinMessage(' Ana ', 1, 12.4))).toEqual({ type: 'join', codec: 'pcm16', channels: 1, name: 'Ana', latencyMs: 12 });
    expect(JSON.parse(joinMessage('', 2, null))).toEqual({ type: 'join', codec: 'pcm16', channels: 2 });
    expect(JSON.parse(joinMessage('Ana', 1, 5, 'opus'))).toEqual({ type: 'join', codec: 'opus', channels: 1, name: 'Ana', latencyMs: 5 });
  });

  it('reads the codec of the mix from welcome (PCM16 unless it says Opus)', () => {
    const w = (codec: unknown) => parseServerMessage(JSON.stringify({ type: 'welcome', participantId: 'p1', block: 120, codec }));
    expect(w('opus')).toMatchObject({ welcome: { codec: 'opus' } });
    expect(w('pcm16')).toMatchObject({ welcome: { codec: 'pcm16' } });
    expect(w(undefined)).toMatchObject({ welcome: { codec: 'pcm16' } });
  });

  it('measures bit rates from growing byte counts', () => {
    const r = new RateMeter();
    expect(r.sample(0, 1000)).toBeNull();
    expect(r.sample(22_400, 2000)).toBeCloseTo(179.2); // 400 Opus frames of 56 bytes in a second
    expect(r.sample(22_400, 2000)).toBeNull(); // no time passed
    expect(r.sample(100, 3000)).toBeNull(); // a counter that went back (a new client) starts over
    expect(r.sample(102_500, 4000)).toBeCloseTo(819.2);
  });

  it('clamps mix, jitter and ping fields to the protocol ranges', () => {
    expect(JSON.parse(mixMessage('p2', -200, 3))).toEqual({ type: 'mix', gains: { p2: -144 }, pans: { p2: 1 } });
    expect(JSON.parse(mixMessage('p2', null, -0.5))).toEqual({ type: 'mix', pans: { p2: -0.5 } });
    expect(JSON.parse(jitterMessage('manual', 40))).toEqual({ type: 'jitter', mode: 'manual', depth: 20 });
    expect(JSON.parse(jitterMessage('auto', 5))).toEqual({ type: 'jitter', mode: 'auto' });
    expect(JSON.parse(pingMessage(12.5, 3.14159))).toEqual({ type: 'ping', t: 12.5, rttMs: 3.1 });
  });

  it('reads welcome, stats and pong, and ignores junk', () => {
    const w = parseServerMessage(
      JSON.stringify({ type: 'welcome', participantId: 'p7', block: 120, canSend: true, selfMonitor: false, jitter: { mode: 'safe', depth: 3 }, participants: [{ id: 'p7', name: 'Ana', canSend: true }, { bad: 1 }] }),
    );
    expect(w).toEqual({
      type: 'welcome',
      welcome: { participantId: 'p7', block: 120, codec: 'pcm16', canSend: true, selfMonitor: false, jitter: { mode: 'safe', depth: 3 }, participants: [{ id: 'p7', name: 'Ana', userId: null, canSend: true }] },
    });
    const s = parseServerMessage(
      JSON.stringify({ type: 'stats', up: { lost: 2, late: 1, depth: 3, jitterMs: 0.4, concealed: 5 }, down: { sent: 100, dropped: 0 }, server: { latencyP50Ms: 2.61 } }),
    );
    expect(s).toEqual({ type: 'stats', figures: { serverLatencyMs: 2.61, upDepth: 3, upJitterMs: 0.4, upLosses: 3, upConcealed: 5, downSent: 100, downDropped: 0 } });
    expect(parseServerMessage(JSON.stringify({ type: 'stats', up: null, down: null, server: null }))).toMatchObject({ figures: { upLosses: null, serverLatencyMs: null } });
    expect(parseServerMessage('{"type":"pong","t":5}')).toEqual({ type: 'pong', t: 5 });
    expect(parseServerMessage('not json')).toEqual({ type: 'other' });
    expect(parseServerMessage('[1]')).toEqual({ type: 'other' });
  });

  it('explains close codes in plain words', () => {
    expect(jamCloseMessage(1000)).toBeNull();
    expect(jamCloseMessage(4401)).toMatch(/not signed in/);
    expect(jamCloseMessage(4403)).toMatch(/not a member/);
    expect(jamCloseMessage(1013)).toMatch(/busy/);
    expect(jamCloseMessage(1007, 'bad_frames')).toMatch(/bad_frames/);
  });

  it('builds the jam URL for http and https pages', () => {
    expect(jamUrl({ protocol: 'http:', host: 'h:8000' }, 's 1', 't&k')).toBe('ws://h:8000/jam/s%201?token=t%26k');
    expect(jamUrl({ protocol: 'https:', host: 'h' }, 's', 't')).toBe('wss://h/jam/s?token=t');
  });
});
