// The jam's AudioWorklet (bundled on its own, loaded with audioWorklet.addModule): the
// microphone's 128-frame quanta are re-blocked into the jam's blocks (120 samples) and posted
// to the jam's I/O worker, which frames and sends them; the received mix (interleaved stereo)
// comes back from it and is played through a small FIFO so network jitter does not click. The
// worker's port comes from the page (`link`); the page's own port carries settings and stats.

import { PlayoutFifo, Reblocker } from './jamdsp';

declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: unknown);
}
declare function registerProcessor(name: string, ctor: unknown): void;

type InMsg =
  | { type: 'link'; port: MessagePort }
  | { type: 'config'; block: number; send: boolean; target: number }
  | { type: 'mix'; samples: Float32Array }
  | { type: 'target'; blocks: number }
  | { type: 'send'; on: boolean };

class JamProcessor extends AudioWorkletProcessor {
  private reblock = new Reblocker(120, 1);
  private fifo = new PlayoutFifo(120, 2, 2);
  private sending = false;
  private scratch = new Float32Array(256);
  private quanta = 0;
  private link: MessagePort | null = null;

  constructor() {
    super();
    const onMessage = (e: MessageEvent<InMsg>): void => {
      const m = e.data;
      if (m.type === 'link') {
        this.link = m.port;
        m.port.onmessage = onMessage; // the worker sends the mix on it
      } else if (m.type === 'config') {
        this.reblock = new Reblocker(m.block, 1);
        this.fifo = new PlayoutFifo(m.block, 2, m.target);
        this.sending = m.send;
      } else if (m.type === 'mix') {
        this.fifo.push(m.samples);
      } else if (m.type === 'target') {
        this.fifo.setTarget(m.blocks);
      } else if (m.type === 'send') {
        this.sending = m.on;
      }
    };
    this.port.onmessage = onMessage;
  }

  process(inputs: Float32Array[][], outputs: Float32Array[][]): boolean {
    const input = inputs[0];
    const mic = input?.[0];
    const link = this.link;
    if (this.sending && link && mic && mic.length > 0) {
      for (const block of this.reblock.push(mic)) link.postMessage({ type: 'block', samples: block }, [block.buffer]);
    }
    const out = outputs[0];
    const left = out?.[0];
    if (out && left) {
      const n = left.length;
      if (this.scratch.length !== n * 2) this.scratch = new Float32Array(n * 2);
      this.fifo.pull(this.scratch);
      const right = out[1];
      for (let i = 0; i < n; i += 1) {
        left[i] = this.scratch[2 * i] ?? 0;
        if (right) right[i] = this.scratch[2 * i + 1] ?? 0;
      }
    }
    this.quanta += 1;
    if (this.quanta % 94 === 0) this.port.postMessage({ type: 'stats', stats: this.fifo.stats() }); // ~4 Hz
    return true;
  }
}

registerProcessor('escenario-jam', JamProcessor);
