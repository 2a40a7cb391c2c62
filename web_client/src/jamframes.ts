// The jam's binary audio frame (docs/jam-protocol.md, "Audio frames"): a 16-byte big-endian
// header `!BBBBIIHH` (version, codec, channels, flags, sequence, timestamp, frames,
// redundant_len), the payload, then optionally a redundant copy of the previous payload.
// Pure functions, byte for byte what realtime/jam/frames.py writes and reads.

export const FRAME_VERSION = 1;
export const HEADER_BYTES = 16;
export const CODEC_PCM16 = 0;
export const CODEC_OPUS = 1;
export const FLAG_RESYNC = 0x01;
export const BLOCK_SIZES: readonly number[] = [120, 240, 480];
export const SAMPLE_RATE = 48_000;

export interface FrameHeader {
  codec: number;
  channels: number;
  flags: number;
  /** u32, wraps. */
  sequence: number;
  /** u32 sample index of the first sample, wraps. */
  timestamp: number;
  /** Samples per channel. */
  frames: number;
}

export interface Frame extends FrameHeader {
  payload: Uint8Array;
  /** The previous frame's payload (sequence − 1), or null. */
  redundant: Uint8Array | null;
}

export class FrameError extends Error {
  readonly reason: string;
  constructor(reason: string) {
    super(`bad jam frame: ${reason}`);
    this.reason = reason;
  }
}

/** Encode one frame; `redundant` is the previous frame's payload (optional). */
export function encodeFrame(h: FrameHeader, payload: Uint8Array, redundant: Uint8Array | null = null): Uint8Array {
  const red = redundant ?? new Uint8Array(0);
  const out = new Uint8Array(HEADER_BYTES + payload.length + red.length);
  const v = new DataView(out.buffer);
  v.setUint8(0, FRAME_VERSION);
  v.setUint8(1, h.codec);
  v.setUint8(2, h.channels);
  v.setUint8(3, h.flags & 0xff);
  v.setUint32(4, h.sequence >>> 0, false);
  v.setUint32(8, h.timestamp >>> 0, false);
  v.setUint16(12, h.frames, false);
  v.setUint16(14, red.length, false);
  out.set(payload, HEADER_BYTES);
  out.set(red, HEADER_BYTES + payload.length);
  return out;
}

/** Parse one frame, checking what the server checks (reasons as in the protocol's table). */
export function parseFrame(data: ArrayBuffer | Uint8Array): Frame {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < HEADER_BYTES) throw new FrameError('too_short');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint8(0) !== FRAME_VERSION) throw new FrameError('bad_version');
  const codec = v.getUint8(1);
  if (codec !== CODEC_PCM16 && codec !== CODEC_OPUS) throw new FrameError('unknown_codec');
  const channels = v.getUint8(2);
  if (channels !== 1 && channels !== 2) throw new FrameError('bad_channels');
  const frames = v.getUint16(12, false);
  if (!BLOCK_SIZES.includes(frames)) throw new FrameError('bad_frames');
  const redLen = v.getUint16(14, false);
  const payloadLen = bytes.length - HEADER_BYTES - redLen;
  if (payloadLen < 0) throw new FrameError('bad_length');
  if (payloadLen === 0) throw new FrameError(redLen > 0 ? 'bad_length' : 'empty_payload');
  if (codec === CODEC_PCM16) {
    const want = frames * channels * 2;
    if (payloadLen !== want || (redLen !== 0 && redLen !== want)) throw new FrameError('pcm_size_mismatch');
  } else if (payloadLen > 1275) {
    throw new FrameError('payload_too_long');
  }
  return {
    codec,
    channels,
    flags: v.getUint8(3),
    sequence: v.getUint32(4, false),
    timestamp: v.getUint32(8, false),
    frames,
    payload: bytes.subarray(HEADER_BYTES, HEADER_BYTES + payloadLen),
    redundant: redLen > 0 ? bytes.subarray(HEADER_BYTES + payloadLen) : null,
  };
}

/** Float samples (−1…1, clipped) → PCM16 little-endian bytes. */
export function floatToPcm16(samples: Float32Array): Uint8Array {
  const out = new Uint8Array(samples.length * 2);
  const v = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i += 1) {
    const s = samples[i] ?? 0;
    const c = s > 1 ? 1 : s < -1 ? -1 : Number.isNaN(s) ? 0 : s;
    v.setInt16(i * 2, Math.round(c < 0 ? c * 32768 : c * 32767), true);
  }
  return out;
}

/** PCM16 little-endian bytes → float samples (−1…1). */
export function pcm16ToFloat(bytes: Uint8Array): Float32Array {
  const n = bytes.length >> 1;
  const out = new Float32Array(n);
  const v = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
  for (let i = 0; i < n; i += 1) {
    const s = v.getInt16(i * 2, true);
    out[i] = s < 0 ? s / 32768 : s / 32767;
  }
  return out;
}

/** Numbers a sender keeps: +1 per frame and +block per frame, both wrapping at 2³². */
export class FrameCounter {
  sequence: number;
  timestamp: number;
  private resync = true;

  constructor(
    readonly block: number,
    start = 0,
  ) {
    this.sequence = start >>> 0;
    this.timestamp = 0;
  }

  /** Header for the next frame; RESYNC on the first one and after `markResync()`. */
  next(codec: number, channels: number): FrameHeader {
    const h: FrameHeader = {
      codec,
      channels,
      flags: this.resync ? FLAG_RESYNC : 0,
      sequence: this.sequence,
      timestamp: this.timestamp,
      frames: this.block,
    };
    this.resync = false;
    this.sequence = (this.sequence + 1) >>> 0;
    this.timestamp = (this.timestamp + this.block) >>> 0;
    return h;
  }

  markResync(): void {
    this.resync = true;
  }
}
