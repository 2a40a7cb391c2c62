// Local timeline playback: the session's clips played through this browser's speakers by the
// playback worklet (playback-worklet.ts), following the shared transport and the shared mixer.
//
// The page's part is I/O only: fetch each asset once (`/api/assets/{id}/audio`, FLAC, which
// browsers decode losslessly), decode it to the context's rate, hand it to the worklet; send the
// mix (playmath.buildMix) whenever it changes and the transport whenever it moves. Nothing is
// fetched or decoded until the transport first plays, so opening a session costs nothing.

import type * as Y from 'yjs';

import workletUrl from './playback-worklet.ts?worker&url';
import type { Meter } from './playdsp';
import type { PlaybackInMsg } from './playback-worklet';
import { buildMix, loopFrames, neededAssets, readPlayModel, type AssetInfo } from './playmath';
import { readTransport, transportPosition } from './transport';

export type PlaybackState = 'off' | 'idle' | 'loading' | 'playing' | 'blocked' | 'error';

export interface PlaybackStatus {
  state: PlaybackState;
  /** Assets decoded and handed to the worklet. */
  assets: number;
  meter: Meter | null;
  /** Where the local playhead is (seconds), from the last meter. */
  position: number | null;
  message: string | null;
}

export interface PlaybackOptions {
  token: string;
  doc: Y.Doc;
  onStatus(status: PlaybackStatus): void;
}

/** How many assets are fetched and decoded at once. */
const PARALLEL_FETCHES = 3;
/** The transport is re-sent this often, so the worklet's clock never drifts far from the page's. */
const RESYNC_MS = 1000;

type AssetEntry = { state: 'queued' | 'loading' | 'failed' } | ({ state: 'ready' } & AssetInfo);

export class LocalPlayback {
  private enabled = true;
  private ctx: AudioContext | null = null;
  private node: AudioWorkletNode | null = null;
  private starting: Promise<void> | null = null;
  private readonly assets = new Map<string, AssetEntry>();
  private loading = 0;
  private mixKey = '';
  private transportKey = '';
  private lastTransportMs = 0;
  private timer = 0;
  private destroyed = false;
  private meter: Meter | null = null;
  private message: string | null = null;
  private statusKey = '';
  /** The context or the worklet could not start: reported, never retried. */
  private broken = false;

  constructor(private readonly opts: PlaybackOptions) {
    this.timer = window.setInterval(() => this.tick(), 250);
    document.addEventListener('pointerdown', this.onGesture, true);
    document.addEventListener('keydown', this.onGesture, true);
  }

  get on(): boolean {
    return this.enabled;
  }

  /** Local playback on or off (off: silent, nothing fetched). */
  setEnabled(on: boolean): void {
    this.enabled = on;
    if (!on && this.node) this.post({ type: 'transport', playing: false, frame: 0, at: 0, loop: null });
    this.transportKey = '';
    this.sync();
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    window.clearInterval(this.timer);
    document.removeEventListener('pointerdown', this.onGesture, true);
    document.removeEventListener('keydown', this.onGesture, true);
    this.node?.disconnect();
    void this.ctx?.close();
    this.node = null;
    this.ctx = null;
  }

  /** Follow the document: call after every change (cheap when nothing changed). */
  sync(): void {
    if (this.destroyed) return;
    if (!this.enabled || this.broken) {
      this.report();
      return;
    }
    const transport = readTransport(this.opts.doc);
    if (!this.node) {
      if (transport.playing && !this.starting) this.starting = this.start();
      this.report();
      return;
    }
    const model = readPlayModel(this.opts.doc);
    for (const id of neededAssets(model)) if (!this.assets.has(id)) this.assets.set(id, { state: 'queued' });
    this.pump();
    const rate = this.ctx!.sampleRate;
    const spec = buildMix(model, (id) => {
      const a = this.assets.get(id);
      return a?.state === 'ready' ? { frames: a.frames, channels: a.channels } : null;
    }, rate);
    const mixKey = JSON.stringify(spec);
    if (mixKey !== this.mixKey) {
      this.mixKey = mixKey;
      this.post({ type: 'mix', spec });
    }
    this.followTransport();
    this.report();
  }

  /** Between document changes: start when a play arrives, keep the worklet's clock on the page's. */
  private tick(): void {
    if (this.destroyed || !this.enabled || this.broken) return;
    if (!this.node) {
      this.sync();
      return;
    }
    this.followTransport();
    this.report();
  }

  private followTransport(): void {
    const transport = readTransport(this.opts.doc);
    const key = `${transport.playing}|${transport.startedAt}|${transport.position}|${transport.loop?.join('-') ?? ''}`;
    const now = Date.now();
    if (key !== this.transportKey || (transport.playing && now - this.lastTransportMs >= RESYNC_MS)) {
      this.transportKey = key;
      this.lastTransportMs = now;
      this.sendTransport(now);
    }
  }

  private sendTransport(now: number): void {
    const ctx = this.ctx;
    if (!ctx) return;
    const t = readTransport(this.opts.doc);
    const rate = ctx.sampleRate;
    // what is rendered now is heard `latency` later: render that far ahead of the playhead
    const latency = (ctx.outputLatency || 0) + (ctx.baseLatency || 0);
    const seconds = transportPosition(t, now) + (t.playing ? latency : 0);
    this.post({
      type: 'transport',
      playing: t.playing,
      frame: Math.round(seconds * rate),
      at: Math.round(ctx.currentTime * rate),
      loop: loopFrames(t.loop, rate),
    });
  }

  private async start(): Promise<void> {
    try {
      const ctx = new AudioContext({ latencyHint: 'interactive' });
      this.ctx = ctx;
      ctx.onstatechange = () => this.report();
      await ctx.audioWorklet.addModule(workletUrl);
      if (this.destroyed) return;
      const node = new AudioWorkletNode(ctx, 'escenario-playback', { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [2] });
      node.port.onmessage = (e: MessageEvent<{ type: string; meter?: Meter }>) => {
        if (e.data.type === 'meter' && e.data.meter) {
          this.meter = e.data.meter;
          this.report();
        }
      };
      node.connect(ctx.destination);
      this.node = node;
      // without a gesture on this page the browser keeps the context suspended: the next click resumes it
      void ctx.resume().catch(() => undefined);
      this.transportKey = '';
      this.sync();
    } catch (err) {
      this.message = `Cannot play here: ${err instanceof Error ? err.message : String(err)}`;
      this.broken = true;
      this.report();
    } finally {
      this.starting = null;
    }
  }

  private readonly onGesture = (): void => {
    if (this.ctx && this.ctx.state === 'suspended') void this.ctx.resume().catch(() => undefined);
  };

  /** Start fetching queued assets, a few at a time. */
  private pump(): void {
    for (const [id, e] of this.assets) {
      if (this.loading >= PARALLEL_FETCHES) return;
      if (e.state !== 'queued') continue;
      this.assets.set(id, { state: 'loading' });
      this.loading += 1;
      void this.load(id).finally(() => {
        this.loading -= 1;
        if (!this.destroyed) this.sync();
      });
    }
  }

  private async load(id: string): Promise<void> {
    const ctx = this.ctx;
    if (!ctx) return;
    try {
      const res = await fetch(`/api/assets/${encodeURIComponent(id)}/audio?format=flac`, {
        headers: { Authorization: `Bearer ${this.opts.token}` },
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const decoded = await ctx.decodeAudioData(await res.arrayBuffer());
      if (this.destroyed) return;
      // copies, transferred: the worklet owns the samples, the page keeps none
      const channels = Array.from({ length: decoded.numberOfChannels }, (_, c) => decoded.getChannelData(c).slice());
      this.post({ type: 'asset', id, channels }, channels.map((c) => c.buffer));
      this.assets.set(id, { state: 'ready', frames: decoded.length, channels: decoded.numberOfChannels });
    } catch (err) {
      // a missing or undecodable asset stays silent, as on the server
      this.assets.set(id, { state: 'failed' });
      this.message = `Could not load an asset: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  private post(msg: PlaybackInMsg, transfer: Transferable[] = []): void {
    this.node?.port.postMessage(msg, transfer);
  }

  private report(): void {
    let ready = 0;
    let pending = 0;
    for (const e of this.assets.values()) {
      if (e.state === 'ready') ready += 1;
      else if (e.state === 'queued' || e.state === 'loading') pending += 1;
    }
    const playing = readTransport(this.opts.doc).playing;
    const state: PlaybackState = this.broken
      ? 'error'
      : !this.enabled
        ? 'off'
        : this.ctx?.state === 'suspended' && playing
          ? 'blocked'
          : pending > 0 || (playing && !this.node)
            ? 'loading'
            : playing && this.node
              ? 'playing'
              : 'idle';
    const rate = this.ctx?.sampleRate ?? 0;
    const position = this.meter && rate > 0 ? Math.round((this.meter.frame / rate) * 100) / 100 : null;
    const status: PlaybackStatus = { state, assets: ready, meter: this.meter, position, message: this.message };
    const key = JSON.stringify(status);
    if (key === this.statusKey) return;
    this.statusKey = key;
    this.opts.onStatus(status);
  }
}
