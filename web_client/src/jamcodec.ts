// Which codec the browser's jam client uses: Opus through WebCodecs (AudioEncoder/AudioDecoder)
// when the browser can run it at the session's block size, else PCM16, which needs no codec
// at all. Pure: the WebCodecs classes are passed in, so Vitest probes fakes.

import { BLOCK_SIZES, SAMPLE_RATE } from './jamframes';

export type JamCodec = 'opus' | 'pcm16';
/** What the user asked for: `auto` takes Opus when it works, `pcm16` never tries it. */
export type CodecPreference = 'auto' | 'pcm16';

/** 128 kbit/s is what the server encodes its mixes at; one 2.5 ms packet is then ~40 bytes. */
export const OPUS_BITRATE = 128_000;
/** Moderate: 2.5 ms CELT frames at 400 packets/s must stay cheap on a laptop's audio path. */
export const OPUS_COMPLEXITY = 5;
/** localStorage key of the user's preference, and the URL parameter that overrides it. */
export const CODEC_PREF_KEY = 'escenario.jamCodec';
export const CODEC_PARAM = 'jamCodec';

// lib.dom's OpusEncoderConfig predates `application` and `signal` (WebCodecs Opus registration).
type OpusConfig = OpusEncoderConfig & { application?: 'voip' | 'audio' | 'lowdelay'; signal?: 'auto' | 'music' | 'voice' };

/** Opus `frameDuration` (µs) for a jam block of `block` samples at 48 kHz: 120 → 2500. */
export function frameDurationUs(block: number): number {
  if (!BLOCK_SIZES.includes(block)) throw new RangeError(`a jam block is 120, 240 or 480 samples, not ${block}`);
  return (block * 1_000_000) / SAMPLE_RATE;
}

/** The encoder for one's own audio: one Opus packet per jam block, no DTX (a silent player
 *  must keep the server's jitter buffer fed), no in-band FEC (CELT-only low delay has none). */
export function opusEncoderConfig(block: number, channels: 1 | 2 = 1): AudioEncoderConfig {
  const opus: OpusConfig = {
    format: 'opus',
    frameDuration: frameDurationUs(block),
    complexity: OPUS_COMPLEXITY,
    usedtx: false,
    useinbandfec: false,
    application: 'lowdelay',
    signal: 'music',
  };
  return { codec: 'opus', sampleRate: SAMPLE_RATE, numberOfChannels: channels, bitrate: OPUS_BITRATE, bitrateMode: 'variable', opus };
}

/** The decoder for the mix the server sends back (always stereo). */
export function opusDecoderConfig(channels: 1 | 2 = 2): AudioDecoderConfig {
  return { codec: 'opus', sampleRate: SAMPLE_RATE, numberOfChannels: channels };
}

/** The two static probes of WebCodecs; either may be missing (no WebCodecs, or an insecure page). */
export interface CodecApi {
  AudioEncoder?: { isConfigSupported(config: AudioEncoderConfig): Promise<AudioEncoderSupport> };
  AudioDecoder?: { isConfigSupported(config: AudioDecoderConfig): Promise<AudioDecoderSupport> };
}

async function supported(probe: () => Promise<{ supported?: boolean }>): Promise<boolean> {
  try {
    return (await probe()).supported === true;
  } catch {
    return false; // isConfigSupported rejects a config it cannot even parse: not supported
  }
}

/** The block sizes at which this browser can both encode and decode Opus (empty: PCM16 only). */
export async function probeOpus(api: CodecApi, blocks: readonly number[] = BLOCK_SIZES): Promise<Set<number>> {
  const enc = api.AudioEncoder;
  const dec = api.AudioDecoder;
  const out = new Set<number>();
  if (!enc || !dec) return out;
  if (!(await supported(() => dec.isConfigSupported(opusDecoderConfig(2))))) return out;
  const results = await Promise.all(blocks.map((b) => supported(() => enc.isConfigSupported(opusEncoderConfig(b, 1)))));
  blocks.forEach((b, i) => {
    if (results[i]) out.add(b);
  });
  return out;
}

/** The codec for a session whose block is `block`; once Opus failed in this jam, PCM16 for good. */
export function pickCodec(opusBlocks: ReadonlySet<number>, block: number, pref: CodecPreference, opusFailed = false): JamCodec {
  return pref === 'auto' && !opusFailed && opusBlocks.has(block) ? 'opus' : 'pcm16';
}

function prefOf(v: string | null | undefined): CodecPreference | null {
  if (v === 'pcm16') return 'pcm16';
  if (v === 'auto' || v === 'opus') return 'auto';
  return null;
}

/**
 * The preference from `?jamCodec=` in the page's query or in its hash route (`#/s/id?jamCodec=`),
 * which wins, else from what the user stored; `auto` when neither says.
 */
export function codecPreference(search: string, hash: string, stored: string | null): CodecPreference {
  const q = hash.indexOf('?');
  for (const part of [q >= 0 ? hash.slice(q + 1) : '', search.replace(/^\?/, '')]) {
    const p = prefOf(new URLSearchParams(part).get(CODEC_PARAM));
    if (p) return p;
  }
  return prefOf(stored) ?? 'auto';
}

const CELT_US = [2500, 5000, 10000, 20000];
const SILK_US = [10000, 20000, 40000, 60000];

/**
 * Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 §3.1), or null when the
 * packet is malformed. The server closes the connection on a packet whose duration is not the
 * block, so the client checks what its encoder made before sending it.
 */
export function opusPacketSamples(packet: Uint8Array): number | null {
  const toc = packet[0];
  if (toc === undefined) return null;
  const config = toc >> 3;
  const us = config >= 16 ? CELT_US[config & 3] : config >= 12 ? (config & 1 ? 20000 : 10000) : SILK_US[config & 3];
  if (us === undefined) return null;
  const code = toc & 3;
  let count: number;
  if (code === 0) count = 1;
  else if (code === 3) {
    const c = packet[1];
    if (c === undefined) return null;
    count = c & 0x3f;
    if (count === 0) return null;
  } else count = 2;
  const total = (us * count * SAMPLE_RATE) / 1_000_000;
  return total > 5760 ? null : total; // RFC 6716: at most 120 ms in one packet
}
