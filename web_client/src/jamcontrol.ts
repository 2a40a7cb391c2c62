// The jam's JSON control messages (docs/jam-protocol.md, "Control messages") as the browser
// writes and reads them, the figures the panel shows, and close codes in plain words. Pure.

import type { JamCodec } from './jamcodec';

export type JitterMode = 'auto' | 'safe' | 'manual';
export const JITTER_MODES: readonly JitterMode[] = ['auto', 'safe', 'manual'];

export interface JamParticipant {
  id: string;
  name: string | null;
  userId: string | null;
  canSend: boolean;
}

export interface Welcome {
  participantId: string;
  block: number;
  /** The codec of the mix the server sends (what one joined with). */
  codec: JamCodec;
  canSend: boolean;
  selfMonitor: boolean;
  jitter: { mode: JitterMode; depth: number };
  participants: JamParticipant[];
}

/** What the panel shows, from the server's `stats` and one's own ping/pong. */
export interface JamFigures {
  rttMs: number | null;
  /** Server-added latency (median over this participant's frames), ms. */
  serverLatencyMs: number | null;
  /** The server's jitter buffer for one's own audio, in blocks. */
  upDepth: number | null;
  upJitterMs: number | null;
  /** Lost + late frames upstream; concealed blocks upstream. */
  upLosses: number | null;
  upConcealed: number | null;
  downSent: number | null;
  downDropped: number | null;
}

export const EMPTY_FIGURES: JamFigures = {
  rttMs: null,
  serverLatencyMs: null,
  upDepth: null,
  upJitterMs: null,
  upLosses: null,
  upConcealed: null,
  downSent: null,
  downDropped: null,
};

function rec(v: unknown): Record<string, unknown> | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export function joinMessage(name: string, channels: 1 | 2, latencyMs: number | null, codec: JamCodec = 'pcm16'): string {
  const msg: Record<string, unknown> = { type: 'join', codec, channels };
  const n = Array.from(name.trim()).slice(0, 100).join('');
  if (n) msg.name = n;
  if (latencyMs !== null && Number.isFinite(latencyMs)) msg.latencyMs = Math.min(2000, Math.max(0, Math.round(latencyMs)));
  return JSON.stringify(msg);
}

/** One player's level (dB, −144 … +12) and pan (−1 … +1) in one's personal mix. */
export function mixMessage(pid: string, gainDb: number | null, pan: number | null): string {
  const msg: { type: 'mix'; gains?: Record<string, number>; pans?: Record<string, number> } = { type: 'mix' };
  if (gainDb !== null) msg.gains = { [pid]: Math.min(12, Math.max(-144, gainDb)) };
  if (pan !== null) msg.pans = { [pid]: Math.min(1, Math.max(-1, pan)) };
  return JSON.stringify(msg);
}

export function monitorMessage(self: boolean): string {
  return JSON.stringify({ type: 'monitor', self });
}

export function jitterMessage(mode: JitterMode, depth: number): string {
  const msg: Record<string, unknown> = { type: 'jitter', mode };
  if (mode !== 'auto') msg.depth = Math.min(20, Math.max(1, Math.round(depth)));
  return JSON.stringify(msg);
}

export function pingMessage(t: number, rttMs: number | null): string {
  const msg: Record<string, unknown> = { type: 'ping', t };
  if (rttMs !== null) msg.rttMs = Math.min(10000, Math.max(0, Math.round(rttMs * 10) / 10));
  return JSON.stringify(msg);
}

function participants(v: unknown): JamParticipant[] {
  if (!Array.isArray(v)) return [];
  const out: JamParticipant[] = [];
  for (const raw of v) {
    const p = rec(raw);
    if (!p || typeof p.id !== 'string') continue;
    out.push({
      id: p.id,
      name: typeof p.name === 'string' ? p.name : null,
      userId: typeof p.userId === 'string' ? p.userId : null,
      canSend: p.canSend === true,
    });
  }
  return out;
}

export type ServerMessage =
  | { type: 'welcome'; welcome: Welcome }
  | { type: 'participants'; participants: JamParticipant[] }
  | { type: 'pong'; t: number }
  | { type: 'stats'; figures: Omit<JamFigures, 'rttMs'> }
  | { type: 'error'; code: string; message: string }
  | { type: 'other' };

/** Parse a text message from the server; anything unexpected becomes `other`. */
export function parseServerMessage(text: string): ServerMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { type: 'other' };
  }
  const m = rec(raw);
  if (!m) return { type: 'other' };
  switch (m.type) {
    case 'welcome': {
      const j = rec(m.jitter);
      const mode = typeof j?.mode === 'string' && (JITTER_MODES as readonly string[]).includes(j.mode) ? (j.mode as JitterMode) : 'auto';
      return {
        type: 'welcome',
        welcome: {
          participantId: typeof m.participantId === 'string' ? m.participantId : '',
          block: num(m.block) ?? 120,
          codec: m.codec === 'opus' ? 'opus' : 'pcm16',
          canSend: m.canSend === true,
          selfMonitor: m.selfMonitor !== false,
          jitter: { mode, depth: num(j?.depth) ?? 2 },
          participants: participants(m.participants),
        },
      };
    }
    case 'participants':
      return { type: 'participants', participants: participants(m.participants) };
    case 'pong': {
      const t = num(m.t);
      return t === null ? { type: 'other' } : { type: 'pong', t };
    }
    case 'stats': {
      const up = rec(m.up);
      const down = rec(m.down);
      const server = rec(m.server);
      const lost = num(up?.lost);
      const late = num(up?.late);
      return {
        type: 'stats',
        figures: {
          serverLatencyMs: num(server?.latencyP50Ms),
          upDepth: num(up?.depth),
          upJitterMs: num(up?.jitterMs),
          upLosses: lost === null && late === null ? null : (lost ?? 0) + (late ?? 0),
          upConcealed: num(up?.concealed),
          downSent: num(down?.sent),
          downDropped: num(down?.dropped),
        },
      };
    }
    case 'error':
      return { type: 'error', code: typeof m.code === 'string' ? m.code : 'error', message: typeof m.message === 'string' ? m.message : '' };
    default:
      return { type: 'other' };
  }
}

/** Why the jam connection closed, in plain words; null for a normal leave. */
export function jamCloseMessage(code: number, reason = ''): string | null {
  switch (code) {
    case 1000:
      return null;
    case 1001:
      return 'The jam ended (or the server is restarting). Join again in a moment.';
    case 1003:
    case 1007:
    case 1009:
      return `The server refused this browser's audio (${reason || `code ${code}`}). Reload the page and try again.`;
    case 1008:
      return reason ? `The server stopped the connection: ${reason}.` : 'The server stopped the connection.';
    case 1013:
      return 'The server is busy, or your connection fell behind. Join again in a moment.';
    case 4001:
      return 'Your role in this session changed. Join again to continue.';
    case 4401:
      return 'You are not signed in any more. Sign in again to join the jam.';
    case 4403:
      return 'You are not a member of this session.';
    case 4404:
      return 'This session no longer exists.';
    default:
      return `The jam connection was lost (code ${code}).`;
  }
}

/** Bit rate from a growing byte count, sampled now and then (kbit/s since the last sample). */
export class RateMeter {
  private last: { t: number; bytes: number } | null = null;

  /** kbit/s since the previous sample; null for the first one or when no time passed. */
  sample(totalBytes: number, nowMs: number): number | null {
    const prev = this.last;
    this.last = { t: nowMs, bytes: totalBytes };
    if (!prev || nowMs <= prev.t || totalBytes < prev.bytes) return null;
    return ((totalBytes - prev.bytes) * 8) / (nowMs - prev.t); // bytes/ms · 8 = kbit/s
  }

  reset(): void {
    this.last = null;
  }
}

/** Round a figure for display ("—" when unknown). */
export function fmtMs(v: number | null, digits = 1): string {
  return v === null ? '—' : `${v.toFixed(digits)} ms`;
}

/** Player label: their name, else "Player <id>". */
export function playerLabel(p: JamParticipant, selfId: string): string {
  const base = p.name?.trim() || `Player ${p.id}`;
  return p.id === selfId ? `${base} (you)` : base;
}

/** The jam's URL for a page at `loc`. */
export function jamUrl(loc: { protocol: string; host: string }, sessionId: string, token: string): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/jam/${encodeURIComponent(sessionId)}?token=${encodeURIComponent(token)}`;
}
