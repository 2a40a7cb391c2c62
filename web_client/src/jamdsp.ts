// Sample-block plumbing shared by the jam's AudioWorklet and its tests: the re-blocker that
// turns the audio thread's 128-frame quanta into the jam's 120-sample blocks, and the small
// playout FIFO (a jitter buffer for the received mix). No DOM, no Web Audio: unit-tested.

/** Collects samples of any chunk size and hands out exact `block`-sized blocks, in order. */
export class Reblocker {
  private readonly buf: Float32Array;
  private fill = 0;

  constructor(
    readonly block: number,
    readonly channels = 1,
  ) {
    // room for one block plus the largest quantum we expect (render quanta are 128 frames)
    this.buf = new Float32Array((block + 1024) * channels);
  }

  /** Push interleaved samples; returns every complete block (interleaved), possibly none. */
  push(interleaved: Float32Array): Float32Array[] {
    const out: Float32Array[] = [];
    const size = this.block * this.channels;
    let i = 0;
    while (i < interleaved.length) {
      const take = Math.min(size - this.fill, interleaved.length - i);
      this.buf.set(interleaved.subarray(i, i + take), this.fill);
      this.fill += take;
      i += take;
      if (this.fill === size) {
        out.push(this.buf.slice(0, size));
        this.fill = 0;
      }
    }
    return out;
  }

  /** Samples (per channel) waiting for the next block. */
  get pending(): number {
    return this.fill / this.channels;
  }
}

export interface FifoStats {
  /** Frames (per channel) queued now. */
  queued: number;
  /** Blocks (per channel) the playout waits for before it starts again. */
  target: number;
  underruns: number;
  /** Frames (per channel) of silence played because nothing was there. */
  silentFrames: number;
  /** Frames dropped to pull latency back to the target. */
  dropped: number;
}

/**
 * Interleaved stereo playout FIFO. Playout starts once `target` blocks are queued; running dry
 * is an underrun (silence, then prefetch again); staying well above the target drops the
 * oldest audio so latency drains back (the protocol's buffer, in its simplest form).
 */
export class PlayoutFifo {
  private readonly buf: Float32Array;
  private read = 0;
  private size = 0;
  private playing = false;
  private over = 0;
  target: number;
  underruns = 0;
  silentFrames = 0;
  dropped = 0;

  constructor(
    readonly block: number,
    readonly channels = 2,
    target = 2,
    readonly capacityBlocks = 64,
  ) {
    this.target = target;
    this.buf = new Float32Array(block * channels * capacityBlocks);
  }

  setTarget(blocks: number): void {
    this.target = Math.max(1, Math.min(this.capacityBlocks / 2, Math.round(blocks)));
  }

  /** Queue one block (interleaved); when full, the oldest audio makes room. */
  push(samples: Float32Array): void {
    const cap = this.buf.length;
    if (samples.length > cap) samples = samples.subarray(samples.length - cap);
    const overflow = this.size + samples.length - cap;
    if (overflow > 0) this.skip(overflow);
    let w = (this.read + this.size) % cap;
    for (let i = 0; i < samples.length; i += 1) {
      this.buf[w] = samples[i] ?? 0;
      w += 1;
      if (w === cap) w = 0;
    }
    this.size += samples.length;
  }

  private skip(n: number): void {
    const k = Math.min(n, this.size);
    this.read = (this.read + k) % this.buf.length;
    this.size -= k;
    this.dropped += k / this.channels;
  }

  /** Fill `out` (interleaved, any length), called once per render quantum. */
  pull(out: Float32Array): void {
    const frames = out.length / this.channels;
    const targetSamples = this.target * this.block * this.channels;
    if (!this.playing && this.size >= targetSamples) this.playing = true;
    if (!this.playing) {
      out.fill(0);
      this.silentFrames += frames;
      return;
    }
    // far above the target for a while (a burst after a stall): drop down to it
    if (this.size > targetSamples + 2 * this.block * this.channels + out.length) {
      this.over += frames;
      if (this.over > 9600) {
        this.skip(this.size - targetSamples);
        this.over = 0;
      }
    } else {
      this.over = 0;
    }
    const cap = this.buf.length;
    const n = Math.min(out.length, this.size);
    for (let i = 0; i < n; i += 1) {
      out[i] = this.buf[this.read] ?? 0;
      this.read += 1;
      if (this.read === cap) this.read = 0;
    }
    this.size -= n;
    if (n < out.length) {
      out.fill(0, n);
      this.silentFrames += (out.length - n) / this.channels;
      this.underruns += 1;
      this.playing = false;
    }
  }

  stats(): FifoStats {
    return {
      queued: this.size / this.channels,
      target: this.target,
      underruns: this.underruns,
      silentFrames: this.silentFrames,
      dropped: this.dropped,
    };
  }
}
