// The jam's Opus streams through WebCodecs: one's own blocks in (f32, 120 samples) → one Opus
// packet per block out; the server's mix frames in → interleaved stereo blocks out, in frame
// order, with silence for missing frames. The WebCodecs classes are passed in (the browser's
// own, or fakes in Vitest); any codec failure is reported once through `error`, never swallowed.

import { opusDecoderConfig, opusEncoderConfig, opusPacketSamples } from './jamcodec';
import { CODEC_OPUS, CODEC_PCM16, FLAG_RESYNC, pcm16ToFloat, SAMPLE_RATE, type Frame } from './jamframes';

/** The parts of EncodedAudioChunk and AudioData that this module reads. */
export interface ChunkLike {
  readonly byteLength: number;
  copyTo(destination: Uint8Array): void;
}
export interface AudioDataLike {
  readonly numberOfFrames: number;
  readonly numberOfChannels: number;
  copyTo(destination: Float32Array, options: { planeIndex: number; format?: AudioSampleFormat }): void;
  close(): void;
}
interface CodecLike {
  readonly state: string;
  close(): void;
}
export interface EncoderLike extends CodecLike {
  readonly encodeQueueSize: number;
  configure(config: AudioEncoderConfig): void;
  encode(data: AudioDataLike): void;
}
export interface DecoderLike extends CodecLike {
  readonly decodeQueueSize: number;
  configure(config: AudioDecoderConfig): void;
  decode(chunk: unknown): void;
}
type OnError = (e: unknown) => void;

/** The WebCodecs constructors (in a browser: `globalThis`). */
export interface WebCodecs {
  AudioEncoder: new (init: { output: (chunk: ChunkLike) => void; error: OnError }) => EncoderLike;
  AudioDecoder: new (init: { output: (data: AudioDataLike) => void; error: OnError }) => DecoderLike;
  AudioData: new (init: AudioDataInit) => AudioDataLike;
  EncodedAudioChunk: new (init: EncodedAudioChunkInit) => unknown;
}

/** A codec queue this long is a backlog (≥ 0.25 s of 2.5 ms blocks). */
export const MAX_CODEC_QUEUE = 100;
/** How long a codec may take to give its first output before a backlog counts against it. */
export const START_GRACE_MS = 3000;
/** How long a backlog must last before the codec counts as fallen behind. */
export const BEHIND_MS = 1000;

/**
 * Whether a codec has fallen behind: its queue stayed over MAX_CODEC_QUEUE for BEHIND_MS on
 * end (and, before its first output, its START_GRACE_MS is over). A queue alone says little: a
 * page whose main thread stalled (a busy machine, a long task, garbage collection) gets the
 * frames that came meanwhile in one burst, before the codec's answers, and a healthy codec
 * then shows a long queue that drains within milliseconds. Falling back to PCM16 for the rest
 * of the jam over that would be wrong.
 */
export class BacklogWatch {
  private firstAt: number | undefined;
  private overSince: number | undefined;

  constructor(private readonly now: () => number) {}

  /** Before each submission: the codec's queue now, and whether it ever gave an output. */
  behind(queue: number, answered: boolean): boolean {
    const t = this.now();
    this.firstAt ??= t;
    if (queue <= MAX_CODEC_QUEUE) {
      this.overSince = undefined;
      return false;
    }
    this.overSince ??= t;
    return t - this.overSince >= BEHIND_MS && (answered || t - this.firstAt >= START_GRACE_MS);
  }
}
/** A sequence gap up to this many blocks is filled with silence; a longer one is a new start. */
export const MAX_FILL_BLOCKS = 16;
/** Opus packets are 1…1275 bytes (RFC 6716 §3.2.1). */
const MAX_OPUS_PACKET = 1275;

function describe(e: unknown): string {
  return e instanceof Error ? e.message || e.name : String(e);
}

function usOf(samples: number): number {
  return Math.round((samples * 1_000_000) / SAMPLE_RATE);
}

export interface PacketSink {
  packet(payload: Uint8Array): void;
  error(message: string): void;
}

/** One's own mono audio → Opus packets, one per jam block. */
export class OpusBlockEncoder {
  private readonly enc: EncoderLike;
  private samples = 0;
  private done = false;
  private outputs = 0;
  private readonly backlog: BacklogWatch;

  /** Throws when WebCodecs refuses the configuration outright (the caller falls back). */
  constructor(
    private readonly api: WebCodecs,
    readonly block: number,
    private readonly on: PacketSink,
    now: () => number = () => performance.now(),
  ) {
    this.backlog = new BacklogWatch(now);
    this.enc = new api.AudioEncoder({ output: (c) => this.output(c), error: (e) => this.fail(`the Opus encoder failed: ${describe(e)}`) });
    try {
      this.enc.configure(opusEncoderConfig(block, 1));
    } catch (e) {
      this.enc.close();
      throw e;
    }
  }

  get failed(): boolean {
    return this.done;
  }

  /** Encode one block (mono f32, `block` samples); its packet comes out through `packet`. */
  encode(samples: Float32Array<ArrayBuffer>): void {
    if (this.done) return;
    if (samples.length !== this.block) {
      this.fail(`a block of ${samples.length} samples reached the Opus encoder, not ${this.block}`);
      return;
    }
    if (this.backlog.behind(this.enc.encodeQueueSize, this.outputs > 0)) {
      this.fail('the Opus encoder fell behind');
      return;
    }
    try {
      const data = new this.api.AudioData({ format: 'f32-planar', sampleRate: SAMPLE_RATE, numberOfFrames: this.block, numberOfChannels: 1, timestamp: usOf(this.samples), data: samples });
      this.enc.encode(data);
      data.close();
    } catch (e) {
      this.fail(`the Opus encoder refused a block: ${describe(e)}`);
      return;
    }
    this.samples += this.block;
  }

  private output(chunk: ChunkLike): void {
    if (this.done) return;
    const bytes = new Uint8Array(chunk.byteLength);
    chunk.copyTo(bytes);
    const n = bytes.length > 0 && bytes.length <= MAX_OPUS_PACKET ? opusPacketSamples(bytes) : null;
    // the server closes the connection on a packet that is not exactly one block
    if (n !== this.block) {
      this.fail(`the Opus encoder made a packet of ${n ?? 'unreadable'} samples, not ${this.block}`);
      return;
    }
    this.outputs += 1;
    this.on.packet(bytes);
  }

  private fail(message: string): void {
    if (this.done) return;
    this.close();
    this.on.error(message);
  }

  close(): void {
    this.done = true;
    if (this.enc.state !== 'closed') this.enc.close();
  }
}

export type SeqStep = { kind: 'first' } | { kind: 'next'; missing: number } | { kind: 'late' } | { kind: 'jump' };

/** How a received sequence number follows the last one (u32, wrapping). */
export function seqStep(last: number | null, seq: number, resync: boolean): SeqStep {
  if (last === null || resync) return { kind: 'first' };
  const d = (seq - last) >>> 0;
  if (d === 0 || d >= 0x8000_0000) return { kind: 'late' };
  if (d - 1 > MAX_FILL_BLOCKS) return { kind: 'jump' };
  return { kind: 'next', missing: d - 1 };
}

/**
 * Blocks leave in the order their frames arrived although Opus ones come back from the decoder
 * later: a slot per block, filled now (PCM16, silence) or by the next decoder output.
 */
export class InOrder {
  private readonly slots: (Float32Array | null)[] = [];

  add(samples: Float32Array | null): void {
    this.slots.push(samples);
  }

  /** The decoder's next output: fills the oldest open slot. False when none was open. */
  fill(samples: Float32Array): boolean {
    const i = this.slots.indexOf(null);
    if (i < 0) return false;
    this.slots[i] = samples;
    return true;
  }

  /** Forget the open slots (their decoder is gone), so the blocks after them can leave. */
  dropOpen(): void {
    for (let i = this.slots.length - 1; i >= 0; i -= 1) if (this.slots[i] === null) this.slots.splice(i, 1);
  }

  /** The blocks ready to leave, oldest first. */
  take(): Float32Array[] {
    const out: Float32Array[] = [];
    while (this.slots.length > 0 && this.slots[0] !== null && this.slots[0] !== undefined) out.push(this.slots.shift() as Float32Array);
    return out;
  }

  get open(): number {
    return this.slots.filter((s) => s === null).length;
  }
}

export interface MixSink {
  /** Interleaved stereo samples, in order. */
  block(stereo: Float32Array): void;
  error(message: string): void;
}

export interface MixDecodeStats {
  /** Opus packets decoded (redundant copies included). */
  decoded: number;
  /** Blocks of silence played in place of frames that never came. */
  silenced: number;
  /** Missing frames rebuilt from the next frame's redundant copy. */
  recovered: number;
  /** Frames that came after a newer one (dropped). */
  late: number;
}

function toStereo(mono: Float32Array): Float32Array {
  const st = new Float32Array(mono.length * 2);
  for (let i = 0; i < mono.length; i += 1) st[2 * i] = st[2 * i + 1] = mono[i] ?? 0;
  return st;
}

/** The server's mix frames (Opus or PCM16) → interleaved stereo blocks for the playout FIFO. */
export class MixDecoder {
  readonly stats: MixDecodeStats = { decoded: 0, silenced: 0, recovered: 0, late: 0 };
  private dec: DecoderLike | null = null;
  private readonly order = new InOrder();
  private last: number | null = null;
  private timestamp = 0;
  private failed = false;
  private readonly backlog: BacklogWatch;

  constructor(
    private readonly api: WebCodecs | null,
    private readonly on: MixSink,
    now: () => number = () => performance.now(),
  ) {
    this.backlog = new BacklogWatch(now);
  }

  push(f: Frame): void {
    const step = seqStep(this.last, f.sequence, (f.flags & FLAG_RESYNC) !== 0);
    if (step.kind === 'late') {
      this.stats.late += 1;
      return;
    }
    this.last = f.sequence;
    const opus = f.codec === CODEC_OPUS;
    if (opus && this.failed) return; // a PCM16 re-join is on its way
    if (step.kind === 'next' && step.missing > 0) {
      const rebuild = f.redundant !== null;
      const silent = rebuild ? step.missing - 1 : step.missing;
      for (let i = 0; i < silent; i += 1) this.order.add(new Float32Array(f.frames * 2));
      this.stats.silenced += silent;
      if (rebuild && f.redundant) {
        this.stats.recovered += 1;
        this.add(f, f.redundant);
      }
    }
    this.add(f, f.payload);
    this.flush();
  }

  private add(f: Frame, payload: Uint8Array): void {
    if (f.codec === CODEC_PCM16) {
      const pcm = pcm16ToFloat(payload);
      this.order.add(f.channels === 1 ? toStereo(pcm) : pcm);
      return;
    }
    const api = this.api;
    const dec = this.decoder();
    if (!dec || !api) return;
    // Until its first output the decoder may still be starting (configure is asynchronous, and
    // slow on a busy machine): BacklogWatch gives it START_GRACE_MS.
    if (this.backlog.behind(dec.decodeQueueSize, this.stats.decoded > 0)) {
      this.fail('the Opus decoder fell behind');
      return;
    }
    try {
      dec.decode(new api.EncodedAudioChunk({ type: 'key', timestamp: usOf(this.timestamp), data: payload }));
    } catch (e) {
      this.fail(`the Opus decoder refused a frame: ${describe(e)}`);
      return;
    }
    this.timestamp += f.frames;
    this.order.add(null);
  }

  private decoder(): DecoderLike | null {
    if (this.dec) return this.dec;
    if (!this.api) {
      this.fail('this browser cannot decode Opus');
      return null;
    }
    try {
      const dec = new this.api.AudioDecoder({ output: (d) => this.output(d), error: (e) => this.fail(`the Opus decoder failed: ${describe(e)}`) });
      this.dec = dec;
      dec.configure(opusDecoderConfig(2));
      return dec;
    } catch (e) {
      this.fail(`the Opus decoder could not start: ${describe(e)}`);
      return null;
    }
  }

  private output(d: AudioDataLike): void {
    try {
      if (this.failed) return;
      const n = d.numberOfFrames;
      const left = new Float32Array(n);
      d.copyTo(left, { planeIndex: 0, format: 'f32-planar' });
      let right = left;
      if (d.numberOfChannels > 1) {
        right = new Float32Array(n);
        d.copyTo(right, { planeIndex: 1, format: 'f32-planar' });
      }
      const st = new Float32Array(n * 2);
      for (let i = 0; i < n; i += 1) {
        st[2 * i] = left[i] ?? 0;
        st[2 * i + 1] = right[i] ?? 0;
      }
      this.stats.decoded += 1;
      if (!this.order.fill(st)) this.order.add(st);
      this.flush();
    } finally {
      d.close();
    }
  }

  private flush(): void {
    for (const b of this.order.take()) this.on.block(b);
  }

  private fail(message: string): void {
    if (this.failed) return;
    this.failed = true;
    this.closeDecoder();
    this.order.dropOpen();
    this.flush();
    this.on.error(message);
  }

  private closeDecoder(): void {
    const dec = this.dec;
    this.dec = null;
    if (dec && dec.state !== 'closed') dec.close();
  }

  close(): void {
    this.failed = true;
    this.closeDecoder();
  }
}

/** The browser's WebCodecs classes, or null when any is missing. */
export function webCodecsOf(g: object): WebCodecs | null {
  const w = g as Partial<Record<keyof WebCodecs, unknown>>;
  return typeof w.AudioEncoder === 'function' && typeof w.AudioDecoder === 'function' && typeof w.AudioData === 'function' && typeof w.EncodedAudioChunk === 'function'
    ? (g as WebCodecs)
    : null;
}
