import { describe, expect, it } from 'vitest';

import { codecPreference, frameDurationUs, OPUS_BITRATE, opusEncoderConfig, opusPacketSamples, pickCodec, probeOpus, type CodecApi } from './jamcodec';

/** A WebCodecs stand-in that supports Opus encoding only at the given frame durations (µs). */
function fakeApi(encDurations: number[], decoder = true, throwing = false): CodecApi & { seen: AudioEncoderConfig[] } {
  const seen: AudioEncoderConfig[] = [];
  return {
    seen,
    AudioEncoder: {
      isConfigSupported: (c: AudioEncoderConfig) => {
        seen.push(c);
        if (throwing) return Promise.reject(new TypeError('bad config'));
        return Promise.resolve({ supported: c.codec === 'opus' && c.sampleRate === 48000 && encDurations.includes(c.opus?.frameDuration ?? -1), config: c });
      },
    },
    AudioDecoder: {
      isConfigSupported: (c: AudioDecoderConfig) => Promise.resolve({ supported: decoder && c.codec === 'opus' && c.numberOfChannels === 2, config: c }),
    },
  };
}

describe('jam codec probe', () => {
  it('maps the jam block to the Opus frame duration', () => {
    expect(frameDurationUs(120)).toBe(2500);
    expect(frameDurationUs(240)).toBe(5000);
    expect(frameDurationUs(480)).toBe(10000);
    expect(() => frameDurationUs(128)).toThrow(RangeError);
  });

  it('asks for mono Opus at 48 kHz, 128 kbit/s, one block per packet, no DTX', () => {
    const c = opusEncoderConfig(120);
    expect(c).toMatchObject({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1, bitrate: OPUS_BITRATE });
    expect(c.opus).toMatchObject({ frameDuration: 2500, usedtx: false, complexity: 5 });
    expect(OPUS_BITRATE).toBeGreaterThanOrEqual(96_000);
    expect(OPUS_BITRATE).toBeLessThanOrEqual(128_000);
  });

  it('finds the blocks at which the browser encodes and decodes Opus', async () => {
    const api = fakeApi([2500, 5000, 10000, 20000]);
    expect([...(await probeOpus(api))].sort()).toEqual([120, 240, 480]);
    expect(api.seen.map((c) => c.opus?.frameDuration)).toEqual([2500, 5000, 10000]);
    expect([...(await probeOpus(fakeApi([10000])))]).toEqual([480]);
  });

  it('finds nothing without WebCodecs, without a decoder, or when the probe rejects', async () => {
    expect((await probeOpus({})).size).toBe(0);
    expect((await probeOpus({ AudioEncoder: fakeApi([2500]).AudioEncoder })).size).toBe(0);
    expect((await probeOpus(fakeApi([2500], false))).size).toBe(0);
    expect((await probeOpus(fakeApi([2500], true, true))).size).toBe(0);
  });

  it('picks Opus only at a supported block, when allowed, and never after it failed', () => {
    const some = new Set([120]);
    expect(pickCodec(some, 120, 'auto')).toBe('opus');
    expect(pickCodec(some, 240, 'auto')).toBe('pcm16');
    expect(pickCodec(some, 120, 'pcm16')).toBe('pcm16');
    expect(pickCodec(new Set(), 120, 'auto')).toBe('pcm16');
    expect(pickCodec(some, 120, 'auto', true)).toBe('pcm16');
  });

  it('reads the preference from the URL first, then storage', () => {
    expect(codecPreference('', '#/s/abc', null)).toBe('auto');
    expect(codecPreference('?jamCodec=pcm16', '#/s/abc', null)).toBe('pcm16');
    expect(codecPreference('', '#/s/abc?jamCodec=pcm16', 'auto')).toBe('pcm16');
    expect(codecPreference('', '#/s/abc', 'pcm16')).toBe('pcm16');
    expect(codecPreference('?jamCodec=opus', '', 'pcm16')).toBe('auto');
    expect(codecPreference('?jamCodec=mp3', '', 'junk')).toBe('auto');
  });
});

describe('Opus packet duration (TOC byte)', () => {
  it('reads CELT, SILK and hybrid durations and frame counts', () => {
    expect(opusPacketSamples(new Uint8Array([0xe0, 1, 2]))).toBe(120); // CELT FB 2.5 ms, mono
    expect(opusPacketSamples(new Uint8Array([0xe4]))).toBe(120); // stereo
    expect(opusPacketSamples(new Uint8Array([0xe8]))).toBe(240); // 5 ms
    expect(opusPacketSamples(new Uint8Array([0xf0]))).toBe(480); // 10 ms
    expect(opusPacketSamples(new Uint8Array([0xf8]))).toBe(960); // 20 ms
    expect(opusPacketSamples(new Uint8Array([0xe1]))).toBe(240); // two equal 2.5 ms frames
    expect(opusPacketSamples(new Uint8Array([0xe3, 0x03]))).toBe(360); // code 3, three frames
    expect(opusPacketSamples(new Uint8Array([0x08]))).toBe(960); // SILK NB 20 ms
    expect(opusPacketSamples(new Uint8Array([0x60]))).toBe(480); // hybrid SWB 10 ms
  });

  it('refuses empty and malformed packets', () => {
    expect(opusPacketSamples(new Uint8Array([]))).toBeNull();
    expect(opusPacketSamples(new Uint8Array([0xe3]))).toBeNull();
    expect(opusPacketSamples(new Uint8Array([0xe3, 0x00]))).toBeNull();
    expect(opusPacketSamples(new Uint8Array([0x1b, 0x3f]))).toBeNull(); // 63 × 60 ms > 120 ms
  });
});
