// The jam's AudioWorklet (bundled on its own, loaded with audioWorklet.addModule): the
// microphone's 128-frame quanta are re-blocked into the jam's blocks (120 samples) and posted
// to the page, which frames and sends them; the received mix (interleaved stereo) is played
// through a small FIFO so network jitter does not click.

import { PlayoutFifo, Reblocker } from './jamdsp';

declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: unknown);
}
declare function registerProcessor(name: string, ctor: unknown): void;

type InMsg =
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

  constructor() {
    super();
    this.port.onmessage = (e: MessageEvent<InMsg>) => {
      const m = e.data;
      if (m.type === 'config') {
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
  }

  process(inputs: Float32Array[][], outputs: Float32Array[][]): boolean {
    const input = inputs[0];
    const mic = input?.[0];
    if (this.sending && mic && mic.length > 0) {
      for (const block of this.reblock.push(mic)) this.port.postMessage({ type: 'block', samples: block }, [block.buffer]);
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
