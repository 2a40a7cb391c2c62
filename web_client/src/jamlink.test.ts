import { describe, expect, it } from 'vitest';

import type { AudioDataLike, ChunkLike, WebCodecs } from './jamcodecio';
import { CODEC_OPUS, CODEC_PCM16, encodeFrame, FLAG_RESYNC, floatToPcm16, parseFrame, type Frame } from './jamframes';
import { JamLink, MAX_BUFFERED, type SocketLike } from './jamlink';

class FakeSocket implements SocketLike {
  readyState = 1;
  bufferedAmount = 0;
  sent: Frame[] = [];
  send(data: Uint8Array): void {
    this.sent.push(parseFrame(data));
  }
}

type OnError = (e: unknown) => void;

/** WebCodecs stand-ins: the encoder answers each block with a one-block Opus packet (TOC
 *  0xe0: CELT fullband 2.5 ms), or throws once `breakAfter` blocks went in. */
function codecs(breakAfter = Infinity): WebCodecs {
  let blocks = 0;
  class Enc {
    state = 'unconfigured';
    encodeQueueSize = 0;
    constructor(readonly init: { output: (c: ChunkLike) => void; error: OnError }) {}
    configure(): void {
      this.state = 'configured';
    }
    encode(): void {
      blocks += 1;
      if (blocks > breakAfter) throw new DOMException('injected', 'EncodingError');
      const p = new Uint8Array([0xe0, blocks & 0xff]);
      this.init.output({ byteLength: p.length, copyTo: (d: Uint8Array) => d.set(p) });
    }
    close(): void {
      this.state = 'closed';
    }
  }
  class Dec {
    state = 'unconfigured';
    decodeQueueSize = 0;
    constructor(readonly init: { output: (d: AudioDataLike) => void; error: OnError }) {}
    configure(): void {
      this.state = 'configured';
    }
    decode(): void {}
    close(): void {
      this.state = 'closed';
    }
  }
  class Data {
    constructor(readonly init: AudioDataInit) {}
    numberOfFrames = 120;
    numberOfChannels = 1;
    copyTo(): void {}
    close(): void {}
  }
  return { AudioEncoder: Enc, AudioDecoder: Dec, AudioData: Data, EncodedAudioChunk: class {} };
}

const block = (v: number): Float32Array<ArrayBuffer> => new Float32Array(120).fill(v);

function link(api: WebCodecs | null = null) {
  const ws = new FakeSocket();
  const mixes: Float32Array[] = [];
  const fallbacks: string[] = [];
  const l = new JamLink(ws, api, { mix: (s) => mixes.push(s), fallback: (r) => fallbacks.push(r) });
  return { ws, l, mixes, fallbacks };
}

describe('the jam link (the I/O worker\'s core)', () => {
  it('sends nothing before the welcome, nor as a viewer, nor on a closed socket', () => {
    const { ws, l } = link();
    l.block(block(0.5)); // no codec chosen yet: the welcome has not come
    l.choose({ codec: 'pcm16', block: 120, canSend: false });
    l.block(block(0.5));
    l.choose({ codec: 'pcm16', block: 120, canSend: true });
    ws.readyState = 3;
    l.block(block(0.5));
    expect(ws.sent).toEqual([]);
    expect(l.counters.sentFrames).toBe(0);
  });

  it('frames PCM16 blocks in sequence, RESYNC first, and counts them', () => {
    const { ws, l } = link();
    l.choose({ codec: 'pcm16', block: 120, canSend: true });
    for (let i = 0; i < 3; i += 1) l.block(block(i / 4));
    expect(ws.sent.map((f) => [f.codec, f.sequence, f.flags & FLAG_RESYNC, f.timestamp])).toEqual([
      [CODEC_PCM16, 0, FLAG_RESYNC, 0],
      [CODEC_PCM16, 1, 0, 120],
      [CODEC_PCM16, 2, 0, 240],
    ]);
    expect(ws.sent[2]!.payload).toEqual(floatToPcm16(block(0.5)));
    expect(l.counters).toMatchObject({ sentFrames: 3, bytesOut: 3 * (16 + 240) });
  });

  it('skips blocks while the socket is backed up and starts over with RESYNC', () => {
    const { ws, l } = link();
    l.choose({ codec: 'pcm16', block: 120, canSend: true });
    l.block(block(0));
    ws.bufferedAmount = MAX_BUFFERED + 1;
    l.block(block(0));
    ws.bufferedAmount = 0;
    l.block(block(0));
    expect(ws.sent.map((f) => f.flags & FLAG_RESYNC)).toEqual([FLAG_RESYNC, FLAG_RESYNC]);
    expect(l.counters.sentFrames).toBe(2);
  });

  it('plays the mix: PCM16 frames out as stereo blocks; a bad frame is dropped', () => {
    const { l, mixes } = link();
    const mono = floatToPcm16(block(0.25));
    const frame = encodeFrame({ codec: CODEC_PCM16, channels: 1, flags: FLAG_RESYNC, sequence: 7, timestamp: 0, frames: 120 }, mono);
    l.received(new Uint8Array([1, 2, 3]).buffer);
    l.received(frame.slice().buffer);
    expect(mixes).toHaveLength(1);
    expect(mixes[0]).toHaveLength(240);
    expect(mixes[0]![0]).toBeCloseTo(0.25, 3);
    expect(mixes[0]![1]).toBeCloseTo(0.25, 3);
    expect(l.counters).toMatchObject({ receivedFrames: 1, bytesIn: frame.length });
  });

  it('sends Opus packets as they come out of the encoder, and says when it breaks', () => {
    const { ws, l, fallbacks } = link(codecs(2));
    l.choose({ codec: 'opus', block: 120, canSend: true });
    for (let i = 0; i < 3; i += 1) l.block(block(0.1));
    expect(ws.sent.map((f) => [f.codec, f.sequence, Array.from(f.payload)])).toEqual([
      [CODEC_OPUS, 0, [0xe0, 1]],
      [CODEC_OPUS, 1, [0xe0, 2]],
    ]);
    expect(fallbacks).toEqual(['the Opus encoder refused a block: injected']);
    // the next block goes as PCM16 (RESYNC: a new format), as do those after the page's re-join
    l.block(block(0.1));
    l.choose({ codec: 'pcm16', block: 120, canSend: true });
    l.block(block(0.1));
    expect(ws.sent.slice(2).map((f) => [f.codec, f.sequence, f.flags & FLAG_RESYNC])).toEqual([
      [CODEC_PCM16, 2, FLAG_RESYNC],
      [CODEC_PCM16, 3, FLAG_RESYNC],
    ]);
    expect(fallbacks).toHaveLength(1);
  });

  it('falls back at once where there is no WebCodecs', () => {
    const { ws, l, fallbacks } = link(null);
    l.choose({ codec: 'opus', block: 120, canSend: true });
    expect(fallbacks).toEqual(['this browser cannot encode Opus']);
    l.block(block(0.1)); // meanwhile PCM16, until the page re-joins
    expect(ws.sent.map((f) => f.codec)).toEqual([CODEC_PCM16]);
  });
});
