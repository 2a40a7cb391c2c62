// The Export dialog of the session view: a mixdown (WAV, FLAC, MP3 or Ogg) or a zip of stems,
// of the whole session or the loop range only, downloaded through
// `GET /api/sessions/{id}/mixdown`. While the server renders, its progress comes from the
// render job it mirrors into the document's `jobs` map (every collaborator sees it); while the
// file arrives, from the response's length. Errors are put in a musician's words.
// The pure parts (query, job matching, wording) are exported for tests.

import * as Y from 'yjs';

import { ApiError, parseError } from './api';
import { h } from './dom';
import { readLastLoop, readTransport, type Range } from './transport';
import { dispositionName } from './upload';

export type ExportFormat = 'wav' | 'flac' | 'mp3' | 'ogg';
export const EXPORT_FORMATS: readonly [ExportFormat, string][] = [
  ['wav', 'WAV (uncompressed)'],
  ['flac', 'FLAC (lossless)'],
  ['mp3', 'MP3'],
  ['ogg', 'Ogg Vorbis'],
];

export interface ExportChoice {
  format: ExportFormat;
  stems: boolean;
  /** Seconds [start, end] to render, or null for the whole session. */
  range: Range | null;
}

/** The mixdown URL's query for a choice. */
export function exportQuery(choice: ExportChoice): string {
  const q = new URLSearchParams({ format: choice.format });
  if (choice.range) {
    q.set('start', choice.range[0].toFixed(3));
    q.set('end', choice.range[1].toFixed(3));
  }
  if (choice.stems) q.set('stems', '1');
  return q.toString();
}

/** The range "loop range only" exports: the active loop, else the one remembered while off. */
export function loopRange(doc: Y.Doc): Range | null {
  return readTransport(doc).loop ?? readLastLoop(doc);
}

export interface RenderProgress {
  status: 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
  /** 0–1, or null while queued. */
  progress: number | null;
}

/**
 * The server's render job for our request: the newest `render` entry of the `jobs` map with
 * our format and stems flag that started no earlier than `sinceMs` (a little clock slack is
 * allowed). Another person's export of the same kind at the same moment may be picked: the
 * bar is a hint, the download is what counts.
 */
export function findRenderJob(doc: Y.Doc, choice: ExportChoice, sinceMs: number): RenderProgress | null {
  let best: { at: number; view: RenderProgress } | null = null;
  for (const raw of doc.getMap('jobs').values()) {
    const j = raw instanceof Y.Map ? (raw.toJSON() as Record<string, unknown>) : null;
    if (!j || j.kind !== 'render' || j.format !== choice.format || Boolean(j.stems) !== choice.stems) continue;
    const at = typeof j.startedAt === 'number' ? j.startedAt : 0;
    if (at < sinceMs - 2000 || (best && best.at >= at)) continue;
    const status = j.status;
    if (status !== 'queued' && status !== 'running' && status !== 'done' && status !== 'failed' && status !== 'cancelled') continue;
    const p = typeof j.progress === 'number' && Number.isFinite(j.progress) ? Math.min(1, Math.max(0, j.progress)) : 0;
    best = { at, view: { status, progress: status === 'queued' ? null : p } };
  }
  return best?.view ?? null;
}

const FORMAT_NAME: Record<ExportFormat, string> = { wav: 'WAV', flac: 'FLAC', mp3: 'MP3', ogg: 'Ogg' };

/** Anything an export throws, in words a musician understands. */
export function exportErrorText(err: unknown, format: ExportFormat): string {
  if (err instanceof ApiError) {
    switch (err.code) {
      case 'empty_range':
        return 'There is nothing to export: no clips play in that part of the session.';
      case 'range_too_long':
        return `That is longer than this server exports in one go. Export the loop range only, or ask an admin. (${err.message})`;
      case 'unsupported_format':
        return `This server cannot make ${FORMAT_NAME[format]} files. Choose WAV or FLAC instead.`;
      case 'invalid_range':
        return 'The loop range cannot be exported: set a loop that ends after it starts.';
      case 'session_not_found':
        return 'This session no longer exists, or you are no longer a member.';
      default:
        break;
    }
    if (err.status === 401) return 'You have been signed out. Sign in again, then export.';
    if (err.status >= 500) return 'The server could not render the mix. Try again in a moment.';
    return err.message;
  }
  if (err instanceof DOMException && err.name === 'AbortError') return 'Export cancelled.';
  if (err instanceof TypeError) return 'The connection dropped during the export. Check your connection and try again.';
  return err instanceof Error && err.message ? err.message : 'The export failed.';
}

/** Fetch a response body while reporting received/total bytes (total 0 when unknown). */
async function readWithProgress(res: Response, onBytes: (got: number, total: number) => void): Promise<Blob> {
  const total = Number(res.headers.get('Content-Length') ?? 0) || 0;
  const type = res.headers.get('Content-Type') ?? 'application/octet-stream';
  if (!res.body) return res.blob();
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    got += value.byteLength;
    onBytes(got, total);
  }
  return new Blob(parts as BlobPart[], { type });
}

function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

export interface ExportDialogOptions {
  sessionId: string;
  token: string;
  doc: Y.Doc;
}

export class ExportDialog {
  /** The "Export…" button, placed by the session view. */
  readonly button: HTMLButtonElement;
  /** The dialog (a backdrop holding the panel), appended to the session view. */
  readonly root: HTMLDivElement;
  private readonly format: HTMLSelectElement;
  private readonly loopOnly: HTMLInputElement;
  private readonly loopHint: HTMLSpanElement;
  private readonly stems: HTMLInputElement;
  private readonly download: HTMLButtonElement;
  private readonly cancel: HTMLButtonElement;
  private readonly progress: HTMLProgressElement;
  private readonly status: HTMLDivElement;
  private readonly error: HTMLDivElement;
  private abort: AbortController | null = null;
  private watch: { choice: ExportChoice; since: number } | null = null;

  constructor(private readonly opts: ExportDialogOptions) {
    this.button = h('button', { type: 'button', class: 'tbtn secondary', testid: 'export-open', title: 'Export a mixdown or stems' }, 'Export…');
    this.format = h('select', { testid: 'export-dialog-format', id: `export-format-${opts.sessionId}` });
    for (const [value, label] of EXPORT_FORMATS) this.format.append(h('option', { value }, label));
    this.loopOnly = h('input', { type: 'checkbox', testid: 'export-loop' });
    this.loopHint = h('span', { class: 'muted' });
    this.stems = h('input', { type: 'checkbox', testid: 'export-stems' });
    this.download = h('button', { type: 'button', testid: 'export-download' }, 'Download');
    this.cancel = h('button', { type: 'button', class: 'secondary', testid: 'export-close' }, 'Close');
    this.progress = h('progress', { testid: 'export-progress', max: 1, hidden: true });
    this.status = h('div', { class: 'muted export-status', testid: 'export-status', role: 'status' });
    this.error = h('div', { class: 'export-error', testid: 'export-error', role: 'alert', hidden: true });
    const panel = h(
      'div',
      { class: 'dialog-panel export-panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': `export-title-${opts.sessionId}` },
      h('h2', { id: `export-title-${opts.sessionId}` }, 'Export'),
      h('label', { class: 'export-row', for: `export-format-${opts.sessionId}` }, 'Format ', this.format),
      h('label', { class: 'export-row' }, this.loopOnly, ' Loop range only ', this.loopHint),
      h('label', { class: 'export-row' }, this.stems, ' Stems: one file per track, in a zip'),
      this.progress,
      this.status,
      this.error,
      h('div', { class: 'export-actions' }, this.download, this.cancel),
    );
    this.root = h('div', { class: 'dialog-backdrop', testid: 'export-dialog', hidden: true }, panel);
    this.button.addEventListener('click', () => this.open());
    this.cancel.addEventListener('click', () => this.close());
    this.download.addEventListener('click', () => void this.run());
    this.root.addEventListener('pointerdown', (e) => {
      if (e.target === this.root && !this.abort) this.close();
    });
    // Keys typed in the dialog are the dialog's: the session's shortcuts (Space, Delete…) must
    // not act on the timeline behind it.
    this.root.addEventListener('keydown', (e) => {
      e.stopPropagation();
      if (e.key === 'Escape' && !this.abort) this.close();
    });
    this.root.addEventListener('keyup', (e) => e.stopPropagation());
    opts.doc.getMap('jobs').observeDeep(this.onJobs);
  }

  open(): void {
    const range = loopRange(this.opts.doc);
    this.loopOnly.disabled = range === null;
    if (range === null) this.loopOnly.checked = false;
    this.loopHint.textContent = range ? `(${range[0].toFixed(1)}–${range[1].toFixed(1)} s)` : '(set a loop on the ruler first)';
    this.root.hidden = false;
    this.format.focus();
  }

  close(): void {
    this.abort?.abort();
    this.root.hidden = true;
  }

  destroy(): void {
    this.abort?.abort();
    this.opts.doc.getMap('jobs').unobserveDeep(this.onJobs);
  }

  private readonly onJobs = (): void => {
    if (!this.watch) return;
    const job = findRenderJob(this.opts.doc, this.watch.choice, this.watch.since);
    if (!job) return;
    if (job.status === 'queued') this.show('Waiting for the server: other exports are rendering…', null);
    else if (job.status === 'running') this.show(`Rendering… ${Math.floor((job.progress ?? 0) * 100)}%`, job.progress);
  };

  private show(text: string, fraction: number | null): void {
    this.status.textContent = text;
    this.progress.hidden = false;
    if (fraction === null) this.progress.removeAttribute('value');
    else this.progress.value = fraction;
  }

  private async run(): Promise<void> {
    const range = this.loopOnly.checked ? loopRange(this.opts.doc) : null;
    const choice: ExportChoice = { format: this.format.value as ExportFormat, stems: this.stems.checked, range };
    this.error.hidden = true;
    this.download.disabled = true;
    this.watch = { choice, since: Date.now() };
    this.show('Rendering…', null);
    const abort = new AbortController();
    this.abort = abort;
    try {
      const res = await fetch(`/api/sessions/${encodeURIComponent(this.opts.sessionId)}/mixdown?${exportQuery(choice)}`, {
        headers: { Authorization: `Bearer ${this.opts.token}` },
        signal: abort.signal,
      });
      this.watch = null;
      if (!res.ok) throw parseError(res.status, await res.text());
      this.show('Downloading…', null);
      const blob = await readWithProgress(res, (got, total) => {
        const mb = (got / 1e6).toFixed(1);
        this.show(total ? `Downloading… ${Math.floor((100 * got) / total)}%` : `Downloading… ${mb} MB`, total ? got / total : null);
      });
      const fallback = `mixdown.${choice.stems ? 'zip' : choice.format}`;
      const name = dispositionName(res.headers.get('Content-Disposition'), fallback);
      saveBlob(blob, name);
      this.progress.hidden = true;
      this.status.textContent = `Saved ${name}.`;
    } catch (err) {
      this.progress.hidden = true;
      this.status.textContent = '';
      this.error.textContent = exportErrorText(err, choice.format);
      this.error.hidden = false;
    } finally {
      this.watch = null;
      this.abort = null;
      this.download.disabled = false;
    }
  }
}
