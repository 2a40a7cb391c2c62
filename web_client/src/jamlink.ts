// The jam's audio path, as it runs in its own Worker (jam-io-worker.ts): one's blocks from the
// AudioWorklet → Opus or PCM16 frames on the socket; the server's mix frames → decoded blocks
// back to the worklet. Nothing on it waits for the page's main thread, so a long task there
// (layout, a repaint, garbage collection, a busy machine) neither delays one's audio to the
// server nor queues up the mix. The page keeps the control side (join, mix settings, stats) and
// tells this link which codec to use; the link reports codec failures and its counters.

import { MixDecoder, OpusBlockEncoder, type MixDecodeStats, type WebCodecs } from './jamcodecio';
import { CODEC_OPUS, CODEC_PCM16, encodeFrame, floatToPcm16, FrameCounter, parseFrame } from './jamframes';

/** The parts of a WebSocket the link writes to. */
export interface SocketLike {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
}

/** What the page tells the link once the server's welcome says the block and the role. */
export interface CodecChoice {
  codec: 'opus' | 'pcm16';
  block: number;
  canSend: boolean;
}

export interface LinkCounters {
  sentFrames: number;
  receivedFrames: number;
  bytesOut: number;
  bytesIn: number;
  mix: MixDecodeStats;
}

export interface LinkEvents {
  /** A decoded block of the mix (interleaved stereo), in order, for the playout FIFO. */
  mix(stereo: Float32Array<ArrayBuffer>): void;
  /** Opus failed here (once per choice of Opus): the page falls back to PCM16. */
  fallback(reason: string): void;
}

/** A socket that has buffered this much is stalled (a tab in the background): start over. */
export const MAX_BUFFERED = 64 * 1024;
const OPEN = 1;

export class JamLink {
  private counter = new FrameCounter(120);
  private choice: CodecChoice | null = null;
  private encoder: OpusBlockEncoder | null = null;
  private decoder: MixDecoder;
  sentFrames = 0;
  receivedFrames = 0;
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    private readonly ws: SocketLike,
    private readonly codecs: WebCodecs | null,
    private readonly on: LinkEvents,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.decoder = this.newDecoder();
  }

  get counters(): LinkCounters {
    return {
      sentFrames: this.sentFrames,
      receivedFrames: this.receivedFrames,
      bytesOut: this.bytesOut,
      bytesIn: this.bytesIn,
      mix: { ...this.decoder.stats },
    };
  }

  /** The codec (and block) to send and to expect the mix in. A change of codec or block is a
   *  re-join at the server, which starts fresh decoders: the next frame carries RESYNC. */
  choose(next: CodecChoice): void {
    const prev = this.choice;
    this.choice = next;
    if (prev === null || prev.block !== next.block) this.counter = new FrameCounter(next.block);
    else if (prev.codec !== next.codec) this.counter.markResync();
    if (prev !== null && prev.codec !== next.codec && next.codec === 'opus') {
      this.decoder.close();
      this.decoder = this.newDecoder();
    }
    this.startEncoder();
  }

  /** One block of one's own audio (mono f32) from the worklet. */
  block(samples: Float32Array<ArrayBuffer>): void {
    const choice = this.choice;
    if (!choice?.canSend || this.ws.readyState !== OPEN) return;
    // Opus packets come back through the encoder's output, framed by send()
    if (this.encoder && !this.encoder.failed) this.encoder.encode(samples);
    else this.send(CODEC_PCM16, floatToPcm16(samples));
  }

  /** A binary frame from the server: the mix. */
  received(data: ArrayBuffer): void {
    let f;
    try {
      f = parseFrame(data);
    } catch {
      return; // a bad frame from the server is dropped, the stream goes on
    }
    this.receivedFrames += 1;
    this.bytesIn += data.byteLength;
    this.decoder.push(f);
  }

  close(): void {
    this.encoder?.close();
    this.encoder = null;
    this.decoder.close();
    this.choice = null;
  }

  private newDecoder(): MixDecoder {
    return new MixDecoder(
      this.codecs,
      { block: (stereo) => this.on.mix(stereo as Float32Array<ArrayBuffer>), error: (m) => this.fail(m) },
      this.now,
    );
  }

  private startEncoder(): void {
    const choice = this.choice;
    const opus = choice !== null && choice.codec === 'opus' && choice.canSend;
    if (this.encoder?.failed) this.encoder = null;
    if (opus === (this.encoder !== null && this.encoder.block === choice?.block)) return;
    this.encoder?.close();
    this.encoder = null;
    if (!opus || !choice) return;
    if (!this.codecs) {
      this.fail('this browser cannot encode Opus');
      return;
    }
    try {
      this.encoder = new OpusBlockEncoder(
        this.codecs,
        choice.block,
        { packet: (payload) => this.send(CODEC_OPUS, payload), error: (m) => this.fail(m) },
        this.now,
      );
    } catch (err) {
      this.fail(`the Opus encoder could not start: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private fail(reason: string): void {
    if (this.choice?.codec !== 'opus') return; // a PCM16 choice has nothing to fall back from
    this.counter.markResync(); // PCM16 from here on: the server starts a fresh decoder
    this.on.fallback(reason);
  }

  private send(codec: number, payload: Uint8Array): void {
    const ws = this.ws;
    if (ws.readyState !== OPEN || !this.choice?.canSend) return;
    if (ws.bufferedAmount > MAX_BUFFERED) {
      this.counter.markResync();
      return;
    }
    const frame = encodeFrame(this.counter.next(codec, 1), payload);
    ws.send(frame);
    this.sentFrames += 1;
    this.bytesOut += frame.length;
  }
}
