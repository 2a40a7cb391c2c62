// The AI-jobs strip of the session view: "Separate stems", "To MIDI" and "Master" for the
// selected clip, and one row per job with its progress bar (driven by the document's `jobs`
// map, so every collaborator sees the same bars), a cancel button and plain-words errors.

import { h } from './dom';
import { jobUi, type JobKind, type JobView } from './jobs';

export interface JobsPanelActions {
  start(kind: JobKind): void;
  cancel(jobId: string): void;
}

const BUTTONS: readonly [JobKind, string, string][] = [
  ['separate', 'Separate stems', 'Split the selected clip into vocals, drums, bass and other'],
  ['transcribe', 'To MIDI', 'Transcribe the selected clip into a MIDI track'],
  ['master', 'Master', 'A mastered copy of the selected clip (loudness, EQ, limiter)'],
];

/** Rows shown at most (the document keeps the twenty newest finished jobs). */
const MAX_ROWS = 8;

export class JobsPanel {
  readonly root: HTMLDivElement;
  private readonly buttons = new Map<JobKind, HTMLButtonElement>();
  private readonly hint: HTMLSpanElement;
  private readonly list: HTMLUListElement;
  private readonly message: HTMLDivElement;
  private readonly rows = new Map<string, { li: HTMLLIElement; key: string }>();

  constructor(private readonly actions: JobsPanelActions) {
    const bar = h('div', { class: 'job-actions', role: 'toolbar', 'aria-label': 'AI tools for the selected clip' });
    for (const [kind, label, title] of BUTTONS) {
      const b = h('button', { type: 'button', testid: `job-${kind}`, title, disabled: true }, label);
      b.addEventListener('click', () => this.actions.start(kind));
      this.buttons.set(kind, b);
      bar.append(b);
    }
    this.hint = h('span', { class: 'muted job-hint', testid: 'job-hint' });
    bar.append(this.hint);
    this.message = h('div', { class: 'job-message', testid: 'job-start-error', role: 'alert', hidden: true });
    this.list = h('ul', { class: 'job-list', testid: 'jobs' });
    this.root = h('div', { class: 'jobs-panel', testid: 'jobs-panel' }, bar, this.message, this.list);
  }

  /** Enable the buttons: `reason` is why they are disabled, null when a clip is ready. */
  setAvailability(reason: string | null): void {
    for (const b of this.buttons.values()) b.disabled = reason !== null;
    this.hint.textContent = reason ?? '';
  }

  showMessage(text: string | null): void {
    this.message.textContent = text ?? '';
    this.message.hidden = !text;
  }

  update(jobs: readonly JobView[], canCancel: boolean, names: (job: JobView) => string): void {
    const shown = jobs.slice(0, MAX_ROWS);
    const keep = new Set(shown.map((j) => j.id));
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.li.remove();
        this.rows.delete(id);
      }
    }
    let prev: Element | null = null;
    for (const job of shown) {
      const ui = jobUi(job);
      const key = JSON.stringify([ui, canCancel, names(job)]);
      let row = this.rows.get(job.id);
      if (!row) {
        row = { li: h('li', { class: 'job', testid: 'job-row', 'data-job-id': job.id }), key: '' };
        this.rows.set(job.id, row);
      }
      if (row.key !== key) {
        row.key = key;
        this.fill(row.li, job, ui, canCancel, names(job));
      }
      const expected: Element | null = prev ? prev.nextElementSibling : this.list.firstElementChild;
      if (expected !== row.li) {
        if (prev) prev.after(row.li);
        else this.list.prepend(row.li);
      }
      prev = row.li;
    }
    this.list.hidden = shown.length === 0;
  }

  private fill(li: HTMLLIElement, job: JobView, ui: ReturnType<typeof jobUi>, canCancel: boolean, source: string): void {
    li.dataset.status = job.status;
    li.dataset.kind = job.kind;
    li.dataset.tone = ui.tone;
    const bar = h('progress', { testid: 'job-progress', max: 1, 'aria-label': `${ui.title} progress` });
    if (ui.progress !== null) bar.value = ui.progress;
    else if (job.status !== 'queued') bar.value = 0;
    bar.dataset.value = String(job.progress);
    const cancel = h('button', { type: 'button', testid: 'job-cancel', class: 'small', hidden: !(ui.cancellable && canCancel) }, 'Cancel');
    cancel.addEventListener('click', () => {
      cancel.disabled = true;
      this.actions.cancel(job.id);
    });
    li.replaceChildren(
      h('span', { class: 'job-title' }, ui.title, source ? h('span', { class: 'muted' }, ` · ${source}`) : null),
      bar,
      h('span', { class: 'job-label', testid: 'job-label' }, ui.label),
      cancel,
    );
    if (ui.error) li.append(h('div', { class: 'job-error', testid: 'job-error', role: 'alert' }, ui.error));
  }
}
