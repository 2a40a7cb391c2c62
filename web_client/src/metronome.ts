// The metronome: a local click (Web Audio) that follows the shared transport, loop included.
// The schedule is pure (which clicks fall in the next slice of transport time); the Metronome
// class only turns it into oscillator blips a little ahead of time, as Web Audio wants.

import { beatSeconds } from './daw';
import { transportPosition, wrapLoop, type Range, type TransportView } from './transport';

export interface Click {
  /** Timeline seconds of the beat. */
  time: number;
  /** Seconds from "now" (the start of the window) until it sounds. */
  delay: number;
  /** The first beat of a bar. */
  accent: boolean;
}

/**
 * The clicks of the next `ahead` seconds of transport time starting at `position`: a playhead
 * that reaches the loop's end continues at its start, as the server's clock does.
 */
export function clicksAhead(
  position: number,
  ahead: number,
  bpm: number,
  timeSignature: readonly [number, number],
  loop: Range | null,
): Click[] {
  const beat = beatSeconds(bpm, timeSignature[1]);
  const beats = Math.max(1, Math.trunc(timeSignature[0]) || 4);
  const out: Click[] = [];
  let pos = wrapLoop(Math.max(0, position), loop);
  let waited = 0;
  // at most a few segments: each ends at the loop's end or at the window's end
  for (let guard = 0; guard < 1000 && waited < ahead - 1e-12; guard += 1) {
    // before or inside the loop, the playhead runs to the loop's end and jumps to its start
    const inLoop = loop !== null && pos < loop[1];
    const segEnd = inLoop ? Math.min(loop[1], pos + (ahead - waited)) : pos + (ahead - waited);
    const first = Math.max(0, Math.ceil(pos / beat - 1e-9)); // max: no -0
    for (let i = first; i * beat < segEnd - 1e-9; i += 1) {
      out.push({ time: i * beat, delay: waited + (i * beat - pos), accent: i % beats === 0 });
    }
    waited += segEnd - pos;
    pos = inLoop && segEnd >= loop[1] - 1e-12 ? loop[0] : segEnd;
  }
  return out;
}

/** How far ahead clicks are handed to Web Audio, and how often the scheduler runs. */
const LOOKAHEAD_S = 0.15;
const TICK_MS = 25;

export interface MetronomeSource {
  transport(): TransportView;
  bpm(): number;
  timeSignature(): [number, number];
}

export class Metronome {
  private ctx: AudioContext | null = null;
  private timer = 0;
  /** Audio time up to which clicks are already scheduled (so none is scheduled twice). */
  private scheduledUntil = 0;
  private key = '';
  /** Audio time and transport position at the last transport change. */
  private anchor: { ctx: number; pos: number } | null = null;
  /** How many clicks were scheduled since it was switched on (shown to tests and people). */
  clicks = 0;

  constructor(
    private readonly source: MetronomeSource,
    private readonly onClick: (count: number) => void = () => {},
  ) {}

  get on(): boolean {
    return this.timer !== 0;
  }

  /** Switch on (call from a user gesture, so the AudioContext may start). */
  start(): void {
    if (this.timer) return;
    this.ctx ??= new AudioContext({ latencyHint: 'interactive' });
    void this.ctx.resume();
    this.scheduledUntil = 0;
    this.key = '';
    this.anchor = null;
    this.timer = window.setInterval(() => this.schedule(), TICK_MS);
    this.schedule();
  }

  stop(): void {
    if (this.timer) window.clearInterval(this.timer);
    this.timer = 0;
  }

  destroy(): void {
    this.stop();
    void this.ctx?.close();
    this.ctx = null;
  }

  private schedule(): void {
    const ctx = this.ctx;
    if (!ctx) return;
    const t = this.source.transport();
    const key = `${t.playing}|${t.startedAt}|${t.position}|${t.loop?.join('-') ?? ''}`;
    if (key !== this.key) {
      // The transport moved (play, stop, seek, loop): anchor the audio clock to it once, so
      // later windows follow from the anchor exactly and no click is doubled or dropped.
      this.key = key;
      this.anchor = t.playing ? { ctx: ctx.currentTime, pos: transportPosition(t, Date.now()) } : null;
      this.scheduledUntil = ctx.currentTime;
    }
    if (!this.anchor) return;
    const from = Math.max(this.scheduledUntil, ctx.currentTime);
    const until = ctx.currentTime + LOOKAHEAD_S;
    if (until <= from) return;
    const pos = wrapLoop(this.anchor.pos + (from - this.anchor.ctx), t.loop);
    for (const c of clicksAhead(pos, until - from, this.source.bpm(), this.source.timeSignature(), t.loop)) {
      this.blip(ctx, from + c.delay, c.accent);
      this.clicks += 1;
      this.onClick(this.clicks);
    }
    this.scheduledUntil = until;
  }

  private blip(ctx: AudioContext, at: number, accent: boolean): void {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = accent ? 1760 : 1320;
    gain.gain.setValueAtTime(0, at);
    gain.gain.linearRampToValueAtTime(accent ? 0.5 : 0.3, at + 0.002);
    gain.gain.exponentialRampToValueAtTime(0.001, at + 0.05);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + 0.06);
  }
}
