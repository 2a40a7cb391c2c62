// The local playback AudioWorklet (bundled on its own, loaded with audioWorklet.addModule): a
// thin shell around PlaybackEngine (playdsp.ts). The page sends decoded assets, the mix and the
// transport; the worklet renders the timeline and posts level meters (~20 Hz).

import { PlaybackEngine, type EngineTransport } from './playdsp';
import type { MixSpec } from './playmath';

declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: unknown);
}
declare function registerProcessor(name: string, ctor: unknown): void;
declare const sampleRate: number;
declare const currentFrame: number;

export type PlaybackInMsg =
  | { type: 'asset'; id: string; channels: Float32Array[] }
  | { type: 'mix'; spec: MixSpec }
  /** `frame` is the timeline frame at context frame `at` (the page's clock when it sent it). */
  | { type: 'transport'; playing: boolean; frame: number; at: number; loop: [number, number] | null };

class PlaybackProcessor extends AudioWorkletProcessor {
  private readonly engine = new PlaybackEngine(sampleRate);

  constructor() {
    super();
    this.port.onmessage = (e: MessageEvent<PlaybackInMsg>) => {
      const m = e.data;
      if (m.type === 'asset') {
        this.engine.setAsset(m.id, m.channels);
      } else if (m.type === 'mix') {
        this.engine.setMix(m.spec);
      } else if (m.type === 'transport') {
        // the message took a moment to arrive: the playhead moved on meanwhile
        const t: EngineTransport = { playing: m.playing, frame: m.frame + Math.max(0, currentFrame - m.at), loop: m.loop };
        this.engine.setTransport(t);
      }
    };
  }

  process(_inputs: Float32Array[][], outputs: Float32Array[][]): boolean {
    const out = outputs[0];
    const left = out?.[0];
    if (!out || !left) return true;
    const right = out[1] ?? new Float32Array(left.length);
    this.engine.render(left, right);
    const meter = this.engine.takeMeter();
    if (meter) this.port.postMessage({ type: 'meter', meter });
    return true;
  }
}

registerProcessor('escenario-playback', PlaybackProcessor);
