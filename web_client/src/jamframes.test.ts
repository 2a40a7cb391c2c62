import { describe, expect, it } from 'vitest';

import { CODEC_OPUS, CODEC_PCM16, encodeFrame, FLAG_RESYNC, floatToPcm16, FrameCounter, FrameError, parseFrame, pcm16ToFloat } from './jamframes';

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const unhex = (s: string): Uint8Array => new Uint8Array(s.match(/../g)!.map((x) => parseInt(x, 16)));

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof FrameError) return e.reason;
    throw e;
  }
  return 'none';
}

describe('jam frame header', () => {
  it('encodes the protocol document example byte for byte', () => {
    const b = encodeFrame({ codec: CODEC_OPUS, channels: 1, flags: 0, sequence: 7, timestamp: 840, frames: 120 }, unhex('e0fffe'));
    expect(hex(b)).toBe('01010100' + '00000007' + '00000348' + '00780000' + 'e0fffe');
  });

  it('matches realtime.jam.frames.encode_frame for PCM16 with redundancy', () => {
    // encode_frame(codec=0, channels=1, sequence=41, timestamp=4920, frames=120,
    //              payload=<1000,-1000>*60, redundant=<5,-5>*60): 496 bytes
    const pay = new Uint8Array(240);
    const red = new Uint8Array(240);
    const pv = new DataView(pay.buffer);
    const rv = new DataView(red.buffer);
    for (let i = 0; i < 120; i += 2) {
      pv.setInt16(i * 2, 1000, true);
      pv.setInt16(i * 2 + 2, -1000, true);
      rv.setInt16(i * 2, 5, true);
      rv.setInt16(i * 2 + 2, -5, true);
    }
    const b = encodeFrame({ codec: CODEC_PCM16, channels: 1, flags: 0, sequence: 41, timestamp: 4920, frames: 120 }, pay, red);
    expect(b.length).toBe(496);
    expect(hex(b.subarray(0, 24))).toBe('010001000000002900001338007800f0e80318fce80318fc');
    expect(hex(b.subarray(256, 264))).toBe('0500fbff0500fbff');
    const f = parseFrame(b);
    expect(f).toMatchObject({ codec: 0, channels: 1, sequence: 41, timestamp: 4920, frames: 120 });
    expect(hex(f.payload)).toBe(hex(pay));
    expect(hex(f.redundant!)).toBe(hex(red));
  });

  it('wraps sequence and timestamp at 2^32 and writes RESYNC', () => {
    // Python: encode_frame(codec=0, channels=2, sequence=0xFFFFFFFF, timestamp=0xFFFFFF88, frames=120, flags=1)
    const b = encodeFrame({ codec: 0, channels: 2, flags: FLAG_RESYNC, sequence: 0xffffffff, timestamp: 0xffffff88, frames: 120 }, new Uint8Array(480));
    expect(hex(b.subarray(0, 16))).toBe('01000201ffffffffffffff8800780000');
    const c = new FrameCounter(120, 0xffffffff);
    c.timestamp = 0xffffff88;
    expect(c.next(0, 1)).toMatchObject({ sequence: 0xffffffff, timestamp: 0xffffff88, flags: FLAG_RESYNC });
    expect(c.next(0, 1)).toMatchObject({ sequence: 0, timestamp: 0, flags: 0 });
    c.markResync();
    expect(c.next(0, 1)).toMatchObject({ sequence: 1, timestamp: 120, flags: FLAG_RESYNC });
  });

  it('refuses what the server refuses, with the same reasons', () => {
    const good = encodeFrame({ codec: 0, channels: 1, flags: 0, sequence: 1, timestamp: 0, frames: 120 }, new Uint8Array(240));
    const bad = (i: number, v: number): Uint8Array => {
      const c = good.slice();
      c[i] = v;
      return c;
    };
    expect(reason(() => parseFrame(good.subarray(0, 15)))).toBe('too_short');
    expect(reason(() => parseFrame(bad(0, 2)))).toBe('bad_version');
    expect(reason(() => parseFrame(bad(1, 9)))).toBe('unknown_codec');
    expect(reason(() => parseFrame(bad(2, 3)))).toBe('bad_channels');
    expect(reason(() => parseFrame(bad(13, 121)))).toBe('bad_frames');
    expect(reason(() => parseFrame(good.subarray(0, 16)))).toBe('empty_payload');
    expect(reason(() => parseFrame(good.subarray(0, 200)))).toBe('pcm_size_mismatch');
    const tooMuchRed = good.slice();
    new DataView(tooMuchRed.buffer).setUint16(14, 300);
    expect(reason(() => parseFrame(tooMuchRed))).toBe('bad_length');
    const opus = encodeFrame({ codec: 1, channels: 1, flags: 0, sequence: 1, timestamp: 0, frames: 120 }, new Uint8Array(1276));
    expect(reason(() => parseFrame(opus))).toBe('payload_too_long');
    expect(reason(() => parseFrame(good))).toBe('none');
  });
});

describe('PCM16 conversion', () => {
  it('scales, clips and writes little-endian', () => {
    const b = floatToPcm16(new Float32Array([0, 1, -1, 2, -2, 0.5, NaN]));
    expect(hex(b)).toBe('0000' + 'ff7f' + '0080' + 'ff7f' + '0080' + '0040' + '0000');
  });

  it('round-trips within one step', () => {
    const x = new Float32Array(1000);
    for (let i = 0; i < x.length; i += 1) x[i] = Math.sin(i / 7) * 0.9;
    const y = pcm16ToFloat(floatToPcm16(x));
    let worst = 0;
    for (let i = 0; i < x.length; i += 1) worst = Math.max(worst, Math.abs((x[i] ?? 0) - (y[i] ?? 0)));
    expect(worst).toBeLessThanOrEqual(1 / 32767);
    expect(pcm16ToFloat(unhex('0080ff7f'))).toEqual(new Float32Array([-1, 1]));
  });
});
