// One browser's place in the session's live jam: microphone in (raw: no echo cancellation,
// noise suppression or gain control), an AudioWorklet re-blocking it into the jam's blocks,
// PCM16 frames over `ws(s)://HOST/jam/{id}` and the personal mix played back through the
// worklet's FIFO. PCM16 both ways, so no codec has to ship to the browser.

import workletUrl from './jam-worklet.ts?worker&url';
import { CODEC_PCM16, encodeFrame, floatToPcm16, FrameCounter, parseFrame, pcm16ToFloat } from './jamframes';
import type { FifoStats } from './jamdsp';
import {
  EMPTY_FIGURES,
  jamCloseMessage,
  jitterMessage,
  joinMessage,
  mixMessage,
  monitorMessage,
  parseServerMessage,
  pingMessage,
  type JamFigures,
  type JamParticipant,
  type JitterMode,
  type Welcome,
} from './jamcontrol';

export type JamState = 'idle' | 'starting' | 'joined' | 'closed';

export interface JamEvents {
  state(state: JamState, message: string | null): void;
  welcome(w: Welcome): void;
  participants(list: JamParticipant[]): void;
  figures(f: JamFigures, local: FifoStats | null): void;
}

const PING_MS = 1000;
const STATS_MS = 1000;

export class JamClient {
  state: JamState = 'idle';
  figures: JamFigures = { ...EMPTY_FIGURES };
  local: FifoStats | null = null;
  welcome: Welcome | null = null;
  private ws: WebSocket | null = null;
  private ctx: AudioContext | null = null;
  private stream: MediaStream | null = null;
  private node: AudioWorkletNode | null = null;
  private counter = new FrameCounter(120);
  private timers: number[] = [];
  private jitter: { mode: JitterMode; depth: number } = { mode: 'auto', depth: 2 };
  private localTarget = 2;
  private lastUnderruns = 0;
  sentFrames = 0;
  receivedFrames = 0;

  constructor(
    private readonly url: string,
    private readonly name: string,
    private readonly on: JamEvents,
  ) {}

  async join(): Promise<void> {
    if (this.state === 'starting' || this.state === 'joined') return;
    this.setState('starting', null);
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1, sampleRate: 48000 },
        video: false,
      });
      const ctx = new AudioContext({ latencyHint: 0, sampleRate: 48000 });
      this.ctx = ctx;
      await ctx.audioWorklet.addModule(workletUrl);
      const node = new AudioWorkletNode(ctx, 'escenario-jam', { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [2] });
      this.node = node;
      node.port.onmessage = (e: MessageEvent<{ type: string; samples?: Float32Array; stats?: FifoStats }>) => this.fromWorklet(e.data);
      ctx.createMediaStreamSource(this.stream).connect(node);
      node.connect(ctx.destination);
      if (ctx.state !== 'running') await ctx.resume();
    } catch (err) {
      this.teardown();
      const denied = err instanceof DOMException && (err.name === 'NotAllowedError' || err.name === 'SecurityError');
      const missing = err instanceof DOMException && err.name === 'NotFoundError';
      this.setState(
        'closed',
        denied
          ? 'The browser did not allow the microphone. Allow it for this site and try again.'
          : missing
            ? 'No microphone was found.'
            : `Could not start audio: ${err instanceof Error ? err.message : String(err)}`,
      );
      return;
    }
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      const ctx = this.ctx;
      const latency = ctx ? ((ctx.baseLatency || 0) + (ctx.outputLatency || 0)) * 1000 + 2.5 : null;
      ws.send(joinMessage(this.name, 1, latency));
    };
    ws.onmessage = (e: MessageEvent<ArrayBuffer | string>) => {
      if (typeof e.data === 'string') this.control(e.data);
      else this.audio(e.data);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.teardown();
      this.setState('closed', jamCloseMessage(e.code, e.reason));
    };
  }

  leave(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'leave' }));
      ws.close(1000);
    } else {
      ws?.close();
    }
    this.teardown();
    if (this.state !== 'idle') this.setState('idle', null);
  }

  setMix(pid: string, gainDb: number | null, pan: number | null): void {
    this.send(mixMessage(pid, gainDb, pan));
  }

  setMonitor(self: boolean): void {
    this.send(monitorMessage(self));
  }

  /** The server's buffer for one's audio and the local playout FIFO follow the same mode. */
  setJitter(mode: JitterMode, depth: number): void {
    this.jitter = { mode, depth };
    this.send(jitterMessage(mode, depth));
    this.localTarget = mode === 'manual' ? depth : mode === 'safe' ? 2 + depth : 2;
    this.node?.port.postMessage({ type: 'target', blocks: this.localTarget });
  }

  private send(text: string): void {
    if (this.ws?.readyState === WebSocket.OPEN && this.welcome) this.ws.send(text);
  }

  private control(text: string): void {
    const m = parseServerMessage(text);
    switch (m.type) {
      case 'welcome': {
        const w = m.welcome;
        this.welcome = w;
        this.counter = new FrameCounter(w.block);
        this.node?.port.postMessage({ type: 'config', block: w.block, send: w.canSend, target: this.localTarget });
        this.setState('joined', w.canSend ? null : 'You are listening (viewers do not send audio).');
        this.on.welcome(w);
        this.on.participants(w.participants);
        if (this.jitter.mode !== 'auto') this.send(jitterMessage(this.jitter.mode, this.jitter.depth));
        this.timers.push(window.setInterval(() => this.send(pingMessage(performance.now(), this.figures.rttMs)), PING_MS));
        this.timers.push(window.setInterval(() => this.send(JSON.stringify({ type: 'stats' })), STATS_MS));
        this.send(pingMessage(performance.now(), null));
        this.send(JSON.stringify({ type: 'stats' }));
        break;
      }
      case 'participants':
        this.on.participants(m.participants);
        break;
      case 'pong': {
        const rtt = performance.now() - m.t;
        if (rtt >= 0 && rtt < 60_000) {
          this.figures = { ...this.figures, rttMs: rtt };
          this.on.figures(this.figures, this.local);
        }
        break;
      }
      case 'stats':
        this.figures = { ...this.figures, ...m.figures };
        this.on.figures(this.figures, this.local);
        break;
      case 'error':
        this.on.state(this.state, m.message || m.code);
        break;
      default:
        break;
    }
  }

  private audio(data: ArrayBuffer): void {
    let f;
    try {
      f = parseFrame(data);
    } catch {
      return; // a bad frame from the server is dropped, the stream goes on
    }
    if (f.codec !== CODEC_PCM16) return;
    this.receivedFrames += 1;
    let pcm = pcm16ToFloat(f.payload);
    if (f.channels === 1) {
      const st = new Float32Array(pcm.length * 2);
      for (let i = 0; i < pcm.length; i += 1) st[2 * i] = st[2 * i + 1] = pcm[i] ?? 0;
      pcm = st;
    }
    this.node?.port.postMessage({ type: 'mix', samples: pcm }, [pcm.buffer]);
  }

  private fromWorklet(m: { type: string; samples?: Float32Array; stats?: FifoStats }): void {
    if (m.type === 'block' && m.samples) {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN || !this.welcome?.canSend) return;
      // a tab in the background stalls the socket: after a backlog, start over with RESYNC
      if (ws.bufferedAmount > 64 * 1024) {
        this.counter.markResync();
        return;
      }
      ws.send(encodeFrame(this.counter.next(CODEC_PCM16, 1), floatToPcm16(m.samples)));
      this.sentFrames += 1;
    } else if (m.type === 'stats' && m.stats) {
      this.local = m.stats;
      // auto/safe: a local underrun deepens the playout FIFO by one block (up to 16)
      if (this.jitter.mode !== 'manual' && m.stats.underruns > this.lastUnderruns && this.state === 'joined' && this.receivedFrames > 400) {
        this.localTarget = Math.min(16, this.localTarget + 1);
        this.node?.port.postMessage({ type: 'target', blocks: this.localTarget });
      }
      this.lastUnderruns = m.stats.underruns;
      this.on.figures(this.figures, this.local);
    }
  }

  private teardown(): void {
    for (const t of this.timers) window.clearInterval(t);
    this.timers = [];
    if (this.node) {
      this.node.port.onmessage = null;
      this.node.disconnect();
      this.node = null;
    }
    for (const t of this.stream?.getTracks() ?? []) t.stop();
    this.stream = null;
    void this.ctx?.close().catch(() => undefined);
    this.ctx = null;
    this.welcome = null;
    this.figures = { ...EMPTY_FIGURES };
    this.local = null;
  }

  private setState(state: JamState, message: string | null): void {
    this.state = state;
    this.on.state(state, message);
  }
}
