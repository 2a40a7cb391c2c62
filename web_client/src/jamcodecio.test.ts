import { describe, expect, it } from 'vitest';

import { BacklogWatch, BEHIND_MS, InOrder, MAX_CODEC_QUEUE, MixDecoder, START_GRACE_MS, OpusBlockEncoder, seqStep, webCodecsOf, type AudioDataLike, type ChunkLike, type WebCodecs } from './jamcodecio';
import { CODEC_OPUS, CODEC_PCM16, encodeFrame, FLAG_RESYNC, floatToPcm16, FrameCounter, parseFrame, type Frame } from './jamframes';

type OnError = (e: unknown) => void;

class FakeData implements AudioDataLike {
  closed = false;
  constructor(readonly init: AudioDataInit) {}
  get numberOfFrames(): number {
    return this.init.numberOfFrames;
  }
  get numberOfChannels(): number {
    return this.init.numberOfChannels;
  }
  copyTo(dest: Float32Array, o: { planeIndex: number }): void {
    const src = this.init.data as Float32Array;
    const n = this.numberOfFrames;
    dest.set(src.subarray(o.planeIndex * n, (o.planeIndex + 1) * n));
  }
  close(): void {
    this.closed = true;
  }
}

class FakeChunk {
  constructor(readonly init: EncodedAudioChunkInit) {}
}

/** WebCodecs stand-ins: the encoder makes a packet from each block synchronously (or as told);
 *  the decoder holds its chunks until `release()`, as a real one answers later. */
function fakes(packetFor: (n: number) => Uint8Array = () => new Uint8Array([0xe0, 0xaa, 0xbb])) {
  const log = { encoded: [] as FakeData[], configs: [] as AudioEncoderConfig[], encoders: [] as FakeEncoder[], decoders: [] as FakeDecoder[] };
  class FakeEncoder {
    state = 'unconfigured';
    encodeQueueSize = 0;
    constructor(readonly init: { output: (c: ChunkLike) => void; error: OnError }) {
      log.encoders.push(this);
    }
    configure(c: AudioEncoderConfig): void {
      log.configs.push(c);
      this.state = 'configured';
    }
    encode(d: AudioDataLike): void {
      const data = d as FakeData;
      log.encoded.push(new FakeData({ ...data.init, data: new Float32Array(data.init.data as Float32Array) }));
      const p = packetFor(log.encoded.length);
      this.init.output({ byteLength: p.length, copyTo: (dst: Uint8Array) => dst.set(p) });
    }
    close(): void {
      this.state = 'closed';
    }
  }
  class FakeDecoder {
    state = 'unconfigured';
    queue: FakeChunk[] = [];
    constructor(readonly init: { output: (d: AudioDataLike) => void; error: OnError }) {
      log.decoders.push(this);
    }
    get decodeQueueSize(): number {
      return this.queue.length;
    }
    configure(c: AudioDecoderConfig): void {
      expect(c).toMatchObject({ codec: 'opus', sampleRate: 48000, numberOfChannels: 2 });
      this.state = 'configured';
    }
    decode(c: unknown): void {
      this.queue.push(c as FakeChunk);
    }
    /** Answer every queued chunk: planar stereo, left = first payload byte, right = its negative. */
    release(): void {
      for (const c of this.queue.splice(0)) {
        const b = new Uint8Array(c.init.data as ArrayBuffer);
        const data = new Float32Array(240);
        data.fill((b[1] ?? 0) / 256, 0, 120);
        data.fill(-(b[1] ?? 0) / 256, 120);
        this.init.output(new FakeData({ format: 'f32-planar', sampleRate: 48000, numberOfFrames: 120, numberOfChannels: 2, timestamp: c.init.timestamp, data }));
      }
    }
    close(): void {
      this.state = 'closed';
    }
  }
  const api: WebCodecs = { AudioEncoder: FakeEncoder, AudioDecoder: FakeDecoder, AudioData: FakeData, EncodedAudioChunk: FakeChunk };
  return { api, log };
}

const block = (v: number): Float32Array<ArrayBuffer> => new Float32Array(120).fill(v);

describe('Opus block encoder', () => {
  it('wraps each block in planar f32 AudioData stamped by the sample counter', () => {
    const { api, log } = fakes();
    const packets: Uint8Array[] = [];
    const enc = new OpusBlockEncoder(api, 120, { packet: (p) => packets.push(p), error: (m) => expect.fail(m) });
    for (let i = 0; i < 3; i += 1) enc.encode(block(i / 4));
    expect(log.configs[0]).toMatchObject({ codec: 'opus', numberOfChannels: 1, opus: { frameDuration: 2500, usedtx: false } });
    expect(log.encoded.map((d) => [d.init.format, d.init.numberOfFrames, d.init.numberOfChannels, d.init.timestamp])).toEqual([
      ['f32-planar', 120, 1, 0],
      ['f32-planar', 120, 1, 2500],
      ['f32-planar', 120, 1, 5000],
    ]);
    expect((log.encoded[2]!.init.data as Float32Array)[0]).toBe(0.5);
    expect(packets).toHaveLength(3);
  });

  it('frames each packet as one Opus jam frame with running sequence and timestamp', () => {
    const { api } = fakes((n) => new Uint8Array([0xe0, n, n + 1]));
    const counter = new FrameCounter(120, 0xffff_fffe);
    const frames: Frame[] = [];
    const enc = new OpusBlockEncoder(api, 120, { packet: (p) => frames.push(parseFrame(encodeFrame(counter.next(CODEC_OPUS, 1), p))), error: (m) => expect.fail(m) });
    for (let i = 0; i < 3; i += 1) enc.encode(block(0));
    expect(frames.map((f) => [f.codec, f.channels, f.flags, f.sequence, f.timestamp, f.frames, f.redundant])).toEqual([
      [CODEC_OPUS, 1, FLAG_RESYNC, 0xffff_fffe, 0, 120, null],
      [CODEC_OPUS, 1, 0, 0xffff_ffff, 120, 120, null],
      [CODEC_OPUS, 1, 0, 0, 240, 120, null],
    ]);
    expect(Array.from(frames[1]!.payload)).toEqual([0xe0, 2, 3]);
  });

  it('fails once, loudly, on a packet that is not one block (the server would close)', () => {
    const { api, log } = fakes(() => new Uint8Array([0xf8, 1])); // a 20 ms packet
    const errors: string[] = [];
    const packets: Uint8Array[] = [];
    const enc = new OpusBlockEncoder(api, 120, { packet: (p) => packets.push(p), error: (m) => errors.push(m) });
    enc.encode(block(0));
    enc.encode(block(0));
    expect(packets).toEqual([]);
    expect(errors).toEqual(['the Opus encoder made a packet of 960 samples, not 120']);
    expect(enc.failed).toBe(true);
    expect(log.encoders[0]!.state).toBe('closed');
    expect(log.encoded).toHaveLength(1);
  });

  it('reports the encoder error callback, a lasting backlog and a refused block', () => {
    const { api, log } = fakes();
    const errors: string[] = [];
    let t = 0;
    const sink = { packet: () => undefined, error: (m: string) => errors.push(m) };
    new OpusBlockEncoder(api, 120, sink);
    log.encoders[0]!.init.error(new DOMException('codec crashed', 'EncodingError'));
    const behind = new OpusBlockEncoder(api, 120, sink, () => t);
    behind.encode(block(0)); // its first packet: it has started
    log.encoders[1]!.encodeQueueSize = MAX_CODEC_QUEUE + 1;
    behind.encode(block(1)); // a backlog begins
    t = BEHIND_MS - 1;
    behind.encode(block(2));
    expect(errors).toEqual(['the Opus encoder failed: codec crashed']);
    t = BEHIND_MS;
    behind.encode(block(3));
    const short = new OpusBlockEncoder(api, 120, sink);
    short.encode(new Float32Array(128));
    expect(errors).toEqual(['the Opus encoder failed: codec crashed', 'the Opus encoder fell behind', 'a block of 128 samples reached the Opus encoder, not 120']);
  });

  it('gives a starting encoder START_GRACE_MS before a backlog counts', () => {
    const { api, log } = fakes();
    const errors: string[] = [];
    let t = 0;
    const sink = { packet: () => undefined, error: (m: string) => errors.push(m) };
    const starting = new OpusBlockEncoder(api, 120, sink, () => t);
    log.encoders[0]!.encodeQueueSize = 4 * MAX_CODEC_QUEUE; // configure still under way
    starting.encode(block(0)); // (the fake answers at once, so use a second one for the timeout)
    expect(errors).toEqual([]);
    const stuck = new OpusBlockEncoder(api, 120, sink, () => t);
    log.encoders[1]!.encodeQueueSize = MAX_CODEC_QUEUE + 1;
    log.encoders[1]!.encode = () => undefined; // never answers
    stuck.encode(block(0));
    t = START_GRACE_MS - 1;
    stuck.encode(block(1));
    expect(errors).toEqual([]);
    t = START_GRACE_MS;
    stuck.encode(block(2));
    expect(errors).toEqual(['the Opus encoder fell behind']);
  });

  it('judges a backlog by how long it lasts, not by one long queue', () => {
    let t = 0;
    const w = new BacklogWatch(() => t);
    expect(w.behind(0, true)).toBe(false);
    // A burst after a stalled main thread: a long queue that drains within the second.
    expect(w.behind(5 * MAX_CODEC_QUEUE, true)).toBe(false);
    t = BEHIND_MS - 1;
    expect(w.behind(MAX_CODEC_QUEUE + 1, true)).toBe(false);
    t = BEHIND_MS + 10;
    expect(w.behind(3, true)).toBe(false); // drained: the clock starts again
    t = 2 * BEHIND_MS;
    expect(w.behind(MAX_CODEC_QUEUE + 1, true)).toBe(false);
    t = 3 * BEHIND_MS - 1;
    expect(w.behind(MAX_CODEC_QUEUE + 1, true)).toBe(false);
    t = 3 * BEHIND_MS;
    expect(w.behind(MAX_CODEC_QUEUE + 1, true)).toBe(true);
    // Before its first output a codec has START_GRACE_MS from its first submission.
    const starting = new BacklogWatch(() => t);
    expect(starting.behind(4 * MAX_CODEC_QUEUE, false)).toBe(false);
    t += START_GRACE_MS - 1;
    expect(starting.behind(4 * MAX_CODEC_QUEUE, false)).toBe(false);
    t += 1;
    expect(starting.behind(4 * MAX_CODEC_QUEUE, false)).toBe(true);
  });

  it('throws when the encoder refuses its configuration, so the client falls back at once', () => {
    const { api } = fakes();
    const refusing = { ...api, AudioEncoder: class extends api.AudioEncoder {
      override configure(): void {
        throw new DOMException('unsupported', 'NotSupportedError');
      }
    } } as WebCodecs;
    expect(() => new OpusBlockEncoder(refusing, 120, { packet: () => undefined, error: () => undefined })).toThrow('unsupported');
  });
});

describe('sequence steps and ordering', () => {
  it('classifies the next sequence number, wrapping at 2^32', () => {
    expect(seqStep(null, 5, false)).toEqual({ kind: 'first' });
    expect(seqStep(4, 5, false)).toEqual({ kind: 'next', missing: 0 });
    expect(seqStep(0xffff_ffff, 1, false)).toEqual({ kind: 'next', missing: 1 });
    expect(seqStep(5, 5, false)).toEqual({ kind: 'late' });
    expect(seqStep(5, 3, false)).toEqual({ kind: 'late' });
    expect(seqStep(5, 5 + 18, false)).toEqual({ kind: 'jump' });
    expect(seqStep(5, 3, true)).toEqual({ kind: 'first' });
  });

  it('lets blocks leave in arrival order although decoded ones fill in later', () => {
    const o = new InOrder();
    const a = new Float32Array([1]);
    o.add(null);
    o.add(a);
    expect(o.take()).toEqual([]);
    expect(o.fill(new Float32Array([0]))).toBe(true);
    expect(o.take().map((x) => x[0])).toEqual([0, 1]);
    expect(o.fill(a)).toBe(false);
    o.add(null);
    o.add(a);
    o.dropOpen();
    expect(o.take()).toEqual([a]);
  });
});

function opusFrame(seq: number, payloadByte: number, redundantByte: number | null = null, flags = 0): Frame {
  return parseFrame(
    encodeFrame({ codec: CODEC_OPUS, channels: 2, flags, sequence: seq, timestamp: seq * 120, frames: 120 }, new Uint8Array([0xe4, payloadByte]), redundantByte === null ? null : new Uint8Array([0xe4, redundantByte])),
  );
}

describe('mix decoder', () => {
  it('decodes Opus mixes to interleaved stereo in frame order', () => {
    const { api, log } = fakes();
    const out: Float32Array[] = [];
    const mix = new MixDecoder(api, { block: (b) => out.push(b), error: (m) => expect.fail(m) });
    mix.push(opusFrame(10, 64, null, FLAG_RESYNC));
    mix.push(opusFrame(11, 128));
    expect(out).toEqual([]); // the decoder has not answered yet
    log.decoders[0]!.release();
    expect(out.map((b) => [b.length, b[0], b[1]])).toEqual([
      [240, 0.25, -0.25],
      [240, 0.5, -0.5],
    ]);
    expect(mix.stats).toEqual({ decoded: 2, silenced: 0, recovered: 0, late: 0 });
  });

  it('plays silence for missing frames, in place, and rebuilds one from redundancy', () => {
    const { api, log } = fakes();
    const out: Float32Array[] = [];
    const mix = new MixDecoder(api, { block: (b) => out.push(b), error: (m) => expect.fail(m) });
    mix.push(opusFrame(1, 64));
    mix.push(opusFrame(4, 128)); // 2 and 3 never came
    mix.push(opusFrame(7, 32, 16)); // 5 lost, 6 rides along as redundancy
    mix.push(opusFrame(6, 99)); // late now
    log.decoders[0]!.release();
    expect(out.map((b) => b[0])).toEqual([0.25, 0, 0, 0.5, 0, 16 / 256, 32 / 256]);
    expect(mix.stats).toEqual({ decoded: 4, silenced: 3, recovered: 1, late: 1 });
  });

  it('gives a starting decoder START_GRACE_MS before its backlog counts', () => {
    const { api, log } = fakes();
    const errors: string[] = [];
    let t = 0;
    const mix = new MixDecoder(api, { block: () => undefined, error: (m) => errors.push(m) }, () => t);
    // Nothing decoded yet (a slow configure): a backlog is not a failure for a while.
    for (let s = 0; s <= 2 * MAX_CODEC_QUEUE; s += 1) mix.push(opusFrame(s, 1, null, s === 0 ? FLAG_RESYNC : 0));
    t = START_GRACE_MS - 1;
    mix.push(opusFrame(2 * MAX_CODEC_QUEUE + 1, 1));
    expect(errors).toEqual([]);
    log.decoders[0]!.release();
    expect(mix.stats.decoded).toBe(2 * MAX_CODEC_QUEUE + 2);
    // Once it has answered, a backlog over MAX_CODEC_QUEUE that lasts BEHIND_MS is a failure.
    for (let s = 2 * MAX_CODEC_QUEUE + 2; s <= 3 * MAX_CODEC_QUEUE + 3; s += 1) mix.push(opusFrame(s, 1));
    expect(errors).toEqual([]);
    t += BEHIND_MS;
    mix.push(opusFrame(3 * MAX_CODEC_QUEUE + 4, 1));
    expect(errors).toEqual(['the Opus decoder fell behind']);
  });

  it('says a decoder that never starts fell behind once its grace is over', () => {
    const { api } = fakes();
    const errors: string[] = [];
    let t = 0;
    const mix = new MixDecoder(api, { block: () => undefined, error: (m) => errors.push(m) }, () => t);
    for (let s = 0; s <= MAX_CODEC_QUEUE + 1; s += 1) mix.push(opusFrame(s, 1, null, s === 0 ? FLAG_RESYNC : 0));
    expect(errors).toEqual([]);
    t = START_GRACE_MS;
    mix.push(opusFrame(MAX_CODEC_QUEUE + 2, 1));
    expect(errors).toEqual(['the Opus decoder fell behind']);
  });

  it('passes PCM16 mixes straight through, mono ones as stereo', () => {
    const out: Float32Array[] = [];
    const mix = new MixDecoder(null, { block: (b) => out.push(b), error: (m) => expect.fail(m) });
    const pcm = floatToPcm16(new Float32Array(120).fill(0.5));
    mix.push(parseFrame(encodeFrame({ codec: CODEC_PCM16, channels: 1, flags: 0, sequence: 0, timestamp: 0, frames: 120 }, pcm)));
    expect(out).toHaveLength(1);
    expect(out[0]!.length).toBe(240);
    expect(out[0]![1]).toBeCloseTo(0.5, 4);
  });

  it('reports a decoder failure once and lets the PCM16 re-join through', () => {
    const { api, log } = fakes();
    const out: Float32Array[] = [];
    const errors: string[] = [];
    const mix = new MixDecoder(api, { block: (b) => out.push(b), error: (m) => errors.push(m) });
    mix.push(opusFrame(1, 64));
    log.decoders[0]!.init.error(new DOMException('bad packet', 'EncodingError'));
    mix.push(opusFrame(2, 64)); // dropped: the decoder is gone
    const pcm = floatToPcm16(new Float32Array(240).fill(0.25));
    mix.push(parseFrame(encodeFrame({ codec: CODEC_PCM16, channels: 2, flags: FLAG_RESYNC, sequence: 0, timestamp: 0, frames: 120 }, pcm)));
    expect(errors).toEqual(['the Opus decoder failed: bad packet']);
    expect(log.decoders[0]!.state).toBe('closed');
    expect(out).toHaveLength(1);
    expect(out[0]![0]).toBeCloseTo(0.25, 4);
  });

  it('says so when Opus arrives and this browser has no decoder', () => {
    const errors: string[] = [];
    const mix = new MixDecoder(null, { block: () => undefined, error: (m) => errors.push(m) });
    mix.push(opusFrame(1, 64));
    expect(errors).toEqual(['this browser cannot decode Opus']);
  });

  it('finds WebCodecs only when all four classes are there', () => {
    const { api } = fakes();
    expect(webCodecsOf(api)).toBe(api);
    expect(webCodecsOf({ ...api, AudioData: undefined })).toBeNull();
    expect(webCodecsOf({})).toBeNull();
  });
});
