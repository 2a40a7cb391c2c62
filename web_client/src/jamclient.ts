// One browser's place in the session's live jam: microphone in (raw: no echo cancellation,
// noise suppression or gain control), an AudioWorklet re-blocking it into the jam's blocks,
// frames over `ws(s)://HOST/jam/{id}` and the personal mix played back through the worklet's
// FIFO. Opus both ways through the browser's own WebCodecs when it can run them at the
// session's block size (nothing to ship), else PCM16; a codec failure re-joins with PCM16.
// The socket and the codecs run in a Worker that talks to the worklet directly
// (jam-io-worker.ts): the audio never waits for this page's main thread. This class keeps the
// control side: the join, codec choices, mix settings, pings and figures.

import JamIoWorker from './jam-io-worker.ts?worker';
import type { FromJamIo, ToJamIo } from './jam-io-worker';
import workletUrl from './jam-worklet.ts?worker&url';
import { pickCodec, probeOpus, type CodecApi, type CodecPreference, type JamCodec } from './jamcodec';
import { webCodecsOf, type MixDecodeStats } from './jamcodecio';
import type { FifoStats } from './jamdsp';
import type { CodecChoice, LinkCounters } from './jamlink';
import {
  EMPTY_FIGURES,
  jamCloseMessage,
  jitterMessage,
  joinMessage,
  RateMeter,
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

/** The audio link as this browser sees it: codec, bit rates on the wire, decoding counts. */
export interface JamLink {
  /** The codec one sends (and asked the mix in). */
  codec: JamCodec;
  /** Why PCM16 although Opus was wanted, or null. */
  fallback: string | null;
  /** Frame bytes (headers included) per second, in kbit/s, over the last second. */
  kbpsOut: number | null;
  kbpsIn: number | null;
  mix: MixDecodeStats;
}

export interface JamEvents {
  state(state: JamState, message: string | null): void;
  welcome(w: Welcome): void;
  participants(list: JamParticipant[]): void;
  figures(f: JamFigures, local: FifoStats | null, link: JamLink): void;
}

const PING_MS = 1000;
const STATS_MS = 1000;
/** Opus' look-ahead in CELT low-delay mode: one's audio reaches the server this much later. */
const OPUS_LOOKAHEAD_MS = 2.5;

export class JamClient {
  state: JamState = 'idle';
  figures: JamFigures = { ...EMPTY_FIGURES };
  local: FifoStats | null = null;
  welcome: Welcome | null = null;
  private io: Worker | null = null;
  private connected = false;
  private ctx: AudioContext | null = null;
  private stream: MediaStream | null = null;
  private node: AudioWorkletNode | null = null;
  private timers: number[] = [];
  private jitter: { mode: JitterMode; depth: number } = { mode: 'auto', depth: 2 };
  private localTarget = 2;
  private lastUnderruns = 0;
  /** The audio link's counters, as its worker last reported them. */
  counters: LinkCounters = { sentFrames: 0, receivedFrames: 0, bytesOut: 0, bytesIn: 0, mix: { decoded: 0, silenced: 0, recovered: 0, late: 0 } };
  private readonly canProbe: boolean;
  private opusBlocks: ReadonlySet<number> = new Set();
  /** The codec of the last `join`: what the server sends the mix in. */
  private requested: JamCodec = 'pcm16';
  private opusFailed: string | null = null;
  private latencyMs: number | null = null;
  private readonly rateOut = new RateMeter();
  private readonly rateIn = new RateMeter();
  private kbpsOut: number | null = null;
  private kbpsIn: number | null = null;

  constructor(
    private readonly url: string,
    private readonly name: string,
    private readonly on: JamEvents,
    private pref: CodecPreference = 'auto',
    codecApi: object = globalThis,
  ) {
    this.canProbe = webCodecsOf(codecApi) !== null;
    this.probeApi = codecApi as CodecApi;
  }

  private readonly probeApi: CodecApi;

  get link(): JamLink {
    return { codec: this.requested, fallback: this.opusFailed, kbpsOut: this.kbpsOut, kbpsIn: this.kbpsIn, mix: { ...this.counters.mix } };
  }

  async join(): Promise<void> {
    if (this.state === 'starting' || this.state === 'joined') return;
    this.setState('starting', null);
    // the probe runs while the microphone starts; a missing or refusing WebCodecs means PCM16
    const probe = this.canProbe && this.pref === 'auto' ? probeOpus(this.probeApi) : Promise.resolve(new Set<number>());
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
      node.port.onmessage = (e: MessageEvent<{ type: string; stats?: FifoStats }>) => this.fromWorklet(e.data);
      ctx.createMediaStreamSource(this.stream).connect(node);
      node.connect(ctx.destination);
      if (ctx.state !== 'running') await ctx.resume();
      this.opusBlocks = await probe;
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
    // The worklet and the worker talk over their own channel, past this thread.
    const channel = new MessageChannel();
    this.node?.port.postMessage({ type: 'link', port: channel.port1 }, [channel.port1]);
    let io: Worker;
    try {
      io = new JamIoWorker();
    } catch (err) {
      this.teardown();
      this.setState('closed', `Could not start audio: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    this.io = io;
    io.onmessage = (e: MessageEvent<FromJamIo>) => {
      if (this.io === io) this.fromIo(e.data);
    };
    io.onerror = (e) => {
      if (this.io !== io) return;
      e.preventDefault();
      this.io = null;
      io.terminate();
      this.teardown();
      this.setState('closed', `The jam's audio worker failed: ${e.message || 'it did not start'}`);
    };
    this.toIo({ type: 'open', url: this.url, worklet: channel.port2 }, [channel.port2]);
  }

  private toIo(m: ToJamIo, transfer: Transferable[] = []): void {
    this.io?.postMessage(m, transfer);
  }

  private fromIo(m: FromJamIo): void {
    switch (m.type) {
      case 'open': {
        this.connected = true;
        const ctx = this.ctx;
        this.latencyMs = ctx ? ((ctx.baseLatency || 0) + (ctx.outputLatency || 0)) * 1000 + 2.5 : null;
        // the block is only known from `welcome`: guess the default one, re-join if it differs
        this.requested = pickCodec(this.opusBlocks, 120, this.pref);
        this.toIo({ type: 'text', text: this.joinText() });
        break;
      }
      case 'text':
        this.control(m.text);
        break;
      case 'fallback':
        this.fallBack(m.reason);
        break;
      case 'counters':
        this.counters = m.counters;
        break;
      case 'closed': {
        this.io = null;
        this.connected = false;
        this.teardown();
        this.setState('closed', jamCloseMessage(m.code, m.reason));
        break;
      }
      default:
        break;
    }
  }

  leave(): void {
    // the worker says goodbye, closes the socket and ends itself
    this.toIo({ type: 'leave' });
    this.io = null;
    this.connected = false;
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

  /** `auto` takes Opus when this browser can (and it has not failed); `pcm16` forces PCM16. */
  setPreference(pref: CodecPreference): void {
    this.pref = pref;
    if (pref === 'pcm16') this.opusFailed = null; // a choice, not a failure
    if (this.welcome) this.chooseCodec(this.welcome.block);
  }

  private joinText(): string {
    const latency = this.latencyMs === null ? null : this.latencyMs + (this.requested === 'opus' ? OPUS_LOOKAHEAD_MS : 0);
    return joinMessage(this.name, 1, latency, this.requested);
  }

  /** Send and receive in the codec this session's block allows; a change is a re-join. */
  private chooseCodec(block: number): void {
    const want = pickCodec(this.opusBlocks, block, this.pref, this.opusFailed !== null);
    const rejoin = want !== this.requested;
    this.requested = want;
    // the link first, so the frames after the re-join carry RESYNC in the new codec
    const choice: CodecChoice = { codec: want, block, canSend: this.welcome?.canSend === true };
    this.toIo({ type: 'codec', choice });
    if (rejoin) this.send(this.joinText()); // the server answers with a new welcome
  }

  /** Opus failed here: say so, and carry on in PCM16 (a re-join asks the mix in PCM16 too). */
  private fallBack(reason: string): void {
    if (this.opusFailed || this.requested !== 'opus') return;
    this.opusFailed = reason;
    if (this.welcome) this.chooseCodec(this.welcome.block);
    this.on.state(this.state, `Opus stopped working in this browser (${reason}); the jam goes on in PCM16.`);
    this.on.figures(this.figures, this.local, this.link);
  }

  private sampleRates(): void {
    const now = performance.now();
    this.kbpsOut = this.rateOut.sample(this.counters.bytesOut, now) ?? this.kbpsOut;
    this.kbpsIn = this.rateIn.sample(this.counters.bytesIn, now) ?? this.kbpsIn;
  }

  private send(text: string): void {
    if (this.connected && this.welcome) this.toIo({ type: 'text', text });
  }

  private control(text: string): void {
    const m = parseServerMessage(text);
    switch (m.type) {
      case 'welcome': {
        const w = m.welcome;
        const again = this.welcome !== null; // the answer to a codec re-join
        this.welcome = w;
        this.on.welcome(w);
        this.on.participants(w.participants);
        this.chooseCodec(w.block);
        if (again) break;
        this.node?.port.postMessage({ type: 'config', block: w.block, send: w.canSend, target: this.localTarget });
        this.setState('joined', w.canSend ? null : 'You are listening (viewers do not send audio).');
        if (this.jitter.mode !== 'auto') this.send(jitterMessage(this.jitter.mode, this.jitter.depth));
        this.timers.push(window.setInterval(() => this.send(pingMessage(performance.now(), this.figures.rttMs)), PING_MS));
        this.timers.push(
          window.setInterval(() => {
            this.send(JSON.stringify({ type: 'stats' }));
            this.sampleRates();
            this.on.figures(this.figures, this.local, this.link);
          }, STATS_MS),
        );
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
          this.on.figures(this.figures, this.local, this.link);
        }
        break;
      }
      case 'stats':
        this.figures = { ...this.figures, ...m.figures };
        this.on.figures(this.figures, this.local, this.link);
        break;
      case 'error':
        this.on.state(this.state, m.message || m.code);
        break;
      default:
        break;
    }
  }

  private fromWorklet(m: { type: string; stats?: FifoStats }): void {
    if (m.type === 'stats' && m.stats) {
      this.local = m.stats;
      // auto/safe: a local underrun deepens the playout FIFO by one block (up to 16)
      if (this.jitter.mode !== 'manual' && m.stats.underruns > this.lastUnderruns && this.state === 'joined' && this.counters.receivedFrames > 400) {
        this.localTarget = Math.min(16, this.localTarget + 1);
        this.node?.port.postMessage({ type: 'target', blocks: this.localTarget });
      }
      this.lastUnderruns = m.stats.underruns;
      this.on.figures(this.figures, this.local, this.link);
    }
  }

  private teardown(): void {
    for (const t of this.timers) window.clearInterval(t);
    this.timers = [];
    if (this.io) {
      this.io.terminate();
      this.io = null;
    }
    this.connected = false;
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
