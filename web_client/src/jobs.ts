// AI jobs on a clip (docs/inference.md): start separation / transcription / mastering through
// the API, read the server-written `jobs` map of the document (every collaborator sees the same
// entries), and turn a job's status into what a musician reads: a label, a progress figure,
// whether it can be cancelled, and an error in plain words. Pure except `startJob`/`cancelJob`.

import * as Y from 'yjs';

import { ApiError, type ApiClient } from './api';

export type JobKind = 'separate' | 'transcribe' | 'master';
export const JOB_KINDS: readonly JobKind[] = ['separate', 'transcribe', 'master'];
export type JobStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export interface JobView {
  id: string;
  kind: JobKind;
  status: JobStatus;
  progress: number;
  error: string | null;
  assetId: string | null;
  createdBy: string | null;
  createdAt: number;
  tracks: string[];
}

/** What one row of the jobs panel shows. */
export interface JobUi {
  title: string;
  /** "Queued", "Separating… 42%", "Done", ... */
  label: string;
  /** 0–1, or null for an indeterminate bar (queued). */
  progress: number | null;
  cancellable: boolean;
  tone: 'busy' | 'ok' | 'error' | 'muted';
  /** Plain-words error, or null. */
  error: string | null;
}

const KIND_TITLE: Record<JobKind, string> = {
  separate: 'Stem separation',
  transcribe: 'Audio to MIDI',
  master: 'Mastering',
};

const KIND_VERB: Record<JobKind, string> = {
  separate: 'Separating',
  transcribe: 'Transcribing',
  master: 'Mastering',
};

/** What presence says while one's own job runs ("separating…"). */
export function jobActivity(kind: JobKind): string {
  return `${KIND_VERB[kind].toLowerCase()}…`;
}

function rec(v: unknown): Record<string, unknown> | null {
  if (v instanceof Y.Map) return v.toJSON() as Record<string, unknown>;
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function isKind(v: unknown): v is JobKind {
  return typeof v === 'string' && (JOB_KINDS as readonly string[]).includes(v);
}

const STATUSES: readonly string[] = ['queued', 'running', 'done', 'failed', 'cancelled'];

/** Inference jobs of the document (render jobs and malformed entries are skipped), newest first. */
export function readJobs(doc: Y.Doc): JobView[] {
  const out: JobView[] = [];
  for (const [id, raw] of doc.getMap('jobs').entries()) {
    const j = rec(raw);
    if (!j || !isKind(j.kind)) continue;
    const status = typeof j.status === 'string' && STATUSES.includes(j.status) ? (j.status as JobStatus) : 'queued';
    const p = typeof j.progress === 'number' && Number.isFinite(j.progress) ? Math.min(1, Math.max(0, j.progress)) : 0;
    out.push({
      id,
      kind: j.kind,
      status,
      progress: status === 'done' ? 1 : p,
      error: typeof j.error === 'string' && j.error ? j.error : null,
      assetId: typeof j.assetId === 'string' ? j.assetId : null,
      createdBy: typeof j.createdBy === 'string' ? j.createdBy : null,
      createdAt: typeof j.createdAt === 'number' ? j.createdAt : 0,
      tracks: Array.isArray(j.tracks) ? j.tracks.filter((t): t is string => typeof t === 'string') : [],
    });
  }
  return out.sort((a, b) => b.createdAt - a.createdAt || a.id.localeCompare(b.id));
}

/** Status → what the panel shows. */
export function jobUi(job: Pick<JobView, 'kind' | 'status' | 'progress' | 'error'>): JobUi {
  const title = KIND_TITLE[job.kind];
  switch (job.status) {
    case 'queued':
      return { title, label: 'Waiting for a free worker…', progress: null, cancellable: true, tone: 'busy', error: null };
    case 'running': {
      const pct = Math.floor(Math.min(1, Math.max(0, job.progress)) * 100);
      return { title, label: `${KIND_VERB[job.kind]}… ${pct}%`, progress: job.progress, cancellable: true, tone: 'busy', error: null };
    }
    case 'done':
      return { title, label: 'Done — new tracks added', progress: 1, cancellable: false, tone: 'ok', error: null };
    case 'cancelled':
      return { title, label: 'Cancelled', progress: null, cancellable: false, tone: 'muted', error: null };
    case 'failed':
      return { title, label: 'Failed', progress: null, cancellable: false, tone: 'error', error: friendlyJobError(job.kind, null, job.error) };
  }
}

const WHAT: Record<JobKind, string> = {
  separate: 'Stem separation',
  transcribe: 'Audio-to-MIDI',
  master: 'Mastering',
};

/** The admin command named in a server message, e.g. "escenario models import PATH". */
function commandIn(message: string): string | null {
  const m = /escenario models (?:fetch|import)[^\s`'"),;]*(?: [^\s`'"),;]+)?/.exec(message);
  return m ? m[0] : null;
}

/**
 * A job's error (an API error code and/or the server's message) in words a musician reads.
 * The server's message is kept where it is already plain (e.g. which stems a model has).
 */
export function friendlyJobError(kind: JobKind, code: string | null, message: string | null): string {
  const msg = (message ?? '').trim();
  const what = WHAT[kind];
  const lower = msg.toLowerCase();
  if (code === 'model_not_installed' || /not installed|no such model|model .*not found/.test(lower)) {
    const cmd = commandIn(msg) ?? 'escenario models import …';
    return `${what} isn't installed on this server — an admin can run \`${cmd}\`.`;
  }
  if (code === 'model_unusable') return `${what} is installed but its model files can't be used — ask an admin to reinstall it.`;
  if (code === 'role_forbidden') return 'Only the owner and editors can run this — you are a viewer here.';
  if (code === 'asset_not_found') return "That clip's audio is gone from the session (it was deleted).";
  if (code === 'clip_not_found') return 'That clip is no longer in the session.';
  if (code === 'not_audio') return `${what} needs an audio clip, not a MIDI one.`;
  if (code === 'no_inference_workers')
    return `${what} can't run: this server has no AI workers. An admin can start one with \`escenario worker\` (or run the server with inference workers).`;
  if (code === 'queue_unavailable') return 'The server cannot take new jobs right now — try again in a minute.';
  if (code === 'job_finished') return 'That job had already finished.';
  if (/worker crashed/.test(lower)) {
    const oom = /oom|out of memory|sigkill/.test(lower);
    return oom
      ? `${what} stopped: the server ran out of memory. Try a shorter clip, or ask an admin.`
      : `${what} stopped because the server's worker crashed. Try again.`;
  }
  if (/gave up after/.test(lower)) return `${what} kept failing on the server and was given up. Try again later.`;
  if (code === 'validation_error') return msg ? `Those settings can't be used: ${msg}` : "Those settings can't be used.";
  if (msg) return `${what} failed: ${msg}`;
  return `${what} failed.`;
}

export interface StartJobOptions {
  clipId?: string;
  trackId?: string;
}

/** POST /api/assets/{id}/{kind}; returns the job id (the document shows it from then on). */
export async function startJob(api: ApiClient, kind: JobKind, assetId: string, opts: StartJobOptions = {}): Promise<string> {
  const body: Record<string, string> = {};
  if (opts.clipId) body.clip_id = opts.clipId;
  if (opts.trackId) body.track_id = opts.trackId;
  const res = await api.request<{ job_id?: string; id?: string }>('POST', `/assets/${encodeURIComponent(assetId)}/${kind}`, body);
  const id = res?.job_id ?? res?.id;
  if (typeof id !== 'string') throw new ApiError(500, 'bad_response', 'The server did not say which job it started.');
  return id;
}

/** DELETE /api/jobs/{id}. */
export async function cancelJob(api: ApiClient, jobId: string): Promise<void> {
  await api.request<unknown>('DELETE', `/jobs/${encodeURIComponent(jobId)}`);
}

/** An API error from starting/cancelling, in plain words. */
export function startErrorMessage(kind: JobKind, err: unknown): string {
  if (err instanceof ApiError) return friendlyJobError(kind, err.code, err.message);
  if (err instanceof TypeError) return 'Cannot reach the server. Check your connection and try again.';
  return friendlyJobError(kind, null, err instanceof Error ? err.message : null);
}

export interface MidiNote {
  pitch: number;
  start: number;
  duration: number;
  velocity: number;
}

/** A midi clip's `notes` (Y.Array of plain objects), validated. */
export function readNotes(v: unknown): MidiNote[] {
  const arr = v instanceof Y.Array ? (v.toArray() as unknown[]) : Array.isArray(v) ? (v as unknown[]) : [];
  const out: MidiNote[] = [];
  for (const raw of arr) {
    const n = rec(raw);
    if (!n) continue;
    const { pitch, start, duration, velocity } = n;
    if (typeof pitch !== 'number' || typeof start !== 'number' || typeof duration !== 'number') continue;
    if (!Number.isFinite(pitch) || !Number.isFinite(start) || !Number.isFinite(duration) || pitch < 0 || pitch > 127 || duration <= 0) continue;
    out.push({ pitch, start, duration, velocity: typeof velocity === 'number' && Number.isFinite(velocity) ? velocity : 100 });
  }
  return out;
}

export interface NoteRect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/**
 * Mini piano roll: the notes that fall inside a clip's window (`offset`…`offset+length` of
 * the asset) as rectangles in a `width` × `height` box, pitch range fitted to the notes.
 */
export function pianoRoll(notes: readonly MidiNote[], offset: number, length: number, width: number, height: number): NoteRect[] {
  if (length <= 0 || width <= 0 || height <= 0) return [];
  const inside = notes.filter((n) => n.start + n.duration > offset && n.start < offset + length);
  if (inside.length === 0) return [];
  let lo = 127;
  let hi = 0;
  for (const n of inside) {
    lo = Math.min(lo, n.pitch);
    hi = Math.max(hi, n.pitch);
  }
  const rows = hi - lo + 1;
  const rowH = height / Math.max(rows, 12);
  const pad = (height - rowH * rows) / 2;
  return inside.map((n) => {
    const s = Math.max(n.start, offset);
    const e = Math.min(n.start + n.duration, offset + length);
    return {
      x: ((s - offset) / length) * width,
      y: pad + (hi - n.pitch) * rowH,
      w: Math.max(1, ((e - s) / length) * width),
      h: Math.max(1, rowH - (rowH > 3 ? 1 : 0)),
    };
  });
}
