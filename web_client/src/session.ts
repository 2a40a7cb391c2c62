// An opened session: the Yjs document synced over `/sync/<id>`, its title, the
// live track list and who is present.

import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';

import type { User } from './api';
import { errorMessage } from './api';
import { isTerminal, stateLabel, syncUrl, terminalState, type ConnState } from './connection';
import {
  addTrackWithClip,
  barBeatLabel,
  dbToFader,
  FADER_STEPS,
  faderToDb,
  formatDb,
  formatPan,
  formatTime,
  gridLines,
  maxPeakDb,
  meterFraction,
  readBpm,
  readClips,
  readTimeSignature,
  readTransport,
  secondsToPx,
  setTrackField,
  setTransport,
  transportPosition,
  waveColumns,
  zoom,
  beatSeconds,
  type ClipView,
  type Peaks,
} from './daw';
import { h, setInputValue } from './dom';
import { downloadMixdown, uploadAsset } from './upload';
import {
  addTrack,
  deleteTrack,
  docTitle,
  newId,
  paletteColor,
  readTracks,
  renameTrack,
  sanitizeTrackName,
  sessionMap,
  trackOrder,
  tracksMap,
  type TrackView,
} from './tracks';

export interface SessionViewOptions {
  sessionId: string;
  token: string;
  user: User;
  /** Title from the session list, shown until the document has its own. */
  listTitle: string | null;
  /** Role from the session list; null while unknown (treated as read-only). */
  role: string | null;
}

interface PresenceUser {
  name: string;
  color: string;
}

/** Stable colour for a user, so a person keeps it across sessions and reloads. */
export function userColor(userId: string): string {
  let hash = 0;
  for (const ch of userId) hash = (hash * 31 + (ch.codePointAt(0) ?? 0)) | 0;
  return paletteColor(Math.abs(hash));
}

export class SessionView {
  readonly root: HTMLElement;
  private readonly opts: SessionViewOptions;
  private readonly doc: Y.Doc;
  private readonly provider: WebsocketProvider;
  private state: ConnState = 'connecting';
  private role: string | null;
  private everSynced = false;
  private destroyed = false;
  private renderQueued = false;

  private readonly titleEl: HTMLHeadingElement;
  private readonly roleEl: HTMLSpanElement;
  private readonly statusEl: HTMLSpanElement;
  private readonly noticeEl: HTMLDivElement;
  private readonly presenceList: HTMLUListElement;
  private readonly addBtn: HTMLButtonElement;
  private readonly trackList: HTMLUListElement;
  private readonly emptyEl: HTMLParagraphElement;
  /** Presence, toolbar and tracks: hidden when the server refused us before any sync. */
  private readonly bodyEl: HTMLDivElement;
  private readonly rows = new Map<string, HTMLLIElement>();

  // timeline, transport, mixer
  private pxPerSecond = 40;
  private readonly transportEl: HTMLDivElement;
  private readonly playBtn: HTMLButtonElement;
  private readonly stopBtn: HTMLButtonElement;
  private readonly posEl: HTMLSpanElement;
  private readonly tempoEl: HTMLSpanElement;
  private readonly listenBtn: HTMLButtonElement;
  private readonly audioEl: HTMLAudioElement;
  private readonly exportBtn: HTMLButtonElement;
  private readonly exportFormat: HTMLSelectElement;
  private readonly masterMeter: HTMLDivElement;
  private readonly uploadEl: HTMLDivElement;
  private readonly fileInput: HTMLInputElement;
  private readonly progressEl: HTMLProgressElement;
  private readonly uploadMsg: HTMLDivElement;
  private readonly arrangeEl: HTMLDivElement;
  private readonly rulerEl: HTMLDivElement;
  private readonly playheadEl: HTMLDivElement;
  private readonly peaks = new Map<string, Promise<Peaks>>();
  private timelineSeconds = 60;
  private rafId = 0;

  private readonly onDocChange = (): void => this.scheduleRender();
  private readonly onAwarenessChange = (): void => {
    this.renderPresence();
    this.renderMeters();
  };

  constructor(opts: SessionViewOptions) {
    this.opts = opts;
    this.role = opts.role;

    this.titleEl = h('h2', { testid: 'doc-title', class: 'doc-title' });
    this.roleEl = h('span', { testid: 'role', class: 'badge' });
    this.statusEl = h('span', { testid: 'status', class: 'status', 'data-state': 'connecting', role: 'status' });
    this.noticeEl = h('div', { testid: 'session-notice', class: 'notice', hidden: true });
    this.presenceList = h('ul', { class: 'presence-list' });
    this.addBtn = h('button', { testid: 'add-track', type: 'button', disabled: true }, 'Add track');
    this.trackList = h('ul', { testid: 'tracks', class: 'tracks' });
    this.emptyEl = h('p', { class: 'muted empty', testid: 'no-tracks' }, 'No tracks yet.');
    this.playBtn = h('button', { type: 'button', testid: 'play', class: 'tbtn play', title: 'Play', 'aria-pressed': 'false' }, '▶ Play');
    this.stopBtn = h('button', { type: 'button', testid: 'stop', class: 'tbtn secondary', title: 'Stop (again: back to start)' }, '■ Stop');
    this.posEl = h('span', { class: 'lcd', testid: 'position' }, '1.1  0:00.0');
    this.tempoEl = h('span', { class: 'lcd muted', testid: 'tempo' });
    this.listenBtn = h('button', { type: 'button', testid: 'listen', class: 'tbtn secondary', 'aria-pressed': 'false', title: 'Hear the server mix' }, '◉ Listen');
    this.audioEl = h('audio', { testid: 'preview-audio', preload: 'none' });
    this.exportFormat = h(
      'select',
      { testid: 'export-format', 'aria-label': 'Mixdown format' },
      h('option', { value: 'wav' }, 'WAV'),
      h('option', { value: 'flac' }, 'FLAC'),
      h('option', { value: 'mp3' }, 'MP3'),
    );
    this.exportBtn = h('button', { type: 'button', testid: 'export', class: 'tbtn secondary' }, '⤓ Export mixdown');
    this.masterMeter = h('div', { class: 'meter master', testid: 'master-meter', title: 'Master level' }, h('div', { class: 'fill' }));
    const zoomOut = h('button', { type: 'button', class: 'tbtn secondary', testid: 'zoom-out', title: 'Zoom out' }, '−');
    const zoomIn = h('button', { type: 'button', class: 'tbtn secondary', testid: 'zoom-in', title: 'Zoom in' }, '+');
    this.transportEl = h(
      'div',
      { class: 'transport', testid: 'transport', 'data-playing': 'false' },
      this.playBtn,
      this.stopBtn,
      this.posEl,
      this.tempoEl,
      h('span', { class: 'spacer' }),
      this.listenBtn,
      this.exportFormat,
      this.exportBtn,
      h('span', { class: 'zoom' }, zoomOut, zoomIn),
      h('span', { class: 'master-label muted' }, 'Master'),
      this.masterMeter,
      this.audioEl,
    );

    this.fileInput = h('input', { type: 'file', accept: 'audio/*', testid: 'upload-input', class: 'visually-hidden', id: `file-${opts.sessionId}` });
    this.progressEl = h('progress', { testid: 'upload-progress', max: 1, value: 0, hidden: true });
    this.uploadMsg = h('div', { class: 'upload-msg', testid: 'upload-error', role: 'alert', hidden: true });
    this.uploadEl = h(
      'div',
      { class: 'upload', testid: 'upload' },
      h('label', { for: `file-${opts.sessionId}`, class: 'upload-label' }, 'Drop audio here or ', h('u', {}, 'choose a file'), ' — it becomes a new track'),
      this.fileInput,
      this.progressEl,
    );

    this.rulerEl = h('div', { class: 'ruler lane-area', testid: 'ruler' });
    this.playheadEl = h('div', { class: 'playhead', testid: 'playhead' });
    this.arrangeEl = h(
      'div',
      { class: 'arrange', testid: 'arrange' },
      h('div', { class: 'ruler-row' }, h('div', { class: 'track-head ruler-head' }, h('span', { class: 'muted' }, 'Tracks'), this.addBtn), this.rulerEl),
      this.trackList,
      this.playheadEl,
    );

    this.bodyEl = h(
      'div',
      { class: 'session-body' },
      h('div', { class: 'presence', testid: 'presence' }, h('span', { class: 'muted' }, 'Here now:'), this.presenceList),
      this.transportEl,
      this.uploadMsg,
      this.uploadEl,
      this.arrangeEl,
      this.emptyEl,
    );

    this.root = h(
      'section',
      { class: 'session', testid: 'session', 'data-session-id': opts.sessionId },
      h(
        'div',
        { class: 'session-head' },
        h('a', { href: '#/', class: 'back', testid: 'back' }, '← Sessions'),
        this.titleEl,
        this.roleEl,
        this.statusEl,
      ),
      this.noticeEl,
      this.bodyEl,
    );

    this.addBtn.addEventListener('click', () => {
      if (!this.canEdit()) return;
      const id = addTrack(this.doc);
      queueMicrotask(() => {
        this.render();
        const input = this.rows.get(id)?.querySelector('input');
        input?.focus();
        input?.select();
      });
    });

    this.playBtn.addEventListener('click', () => {
      if (this.canEdit()) setTransport(this.doc, true);
    });
    this.stopBtn.addEventListener('click', () => {
      if (this.canEdit()) setTransport(this.doc, false);
    });
    this.listenBtn.addEventListener('click', () => this.toggleListen());
    this.exportBtn.addEventListener('click', () => void this.exportMixdown());
    zoomIn.addEventListener('click', () => this.setZoom(zoom(this.pxPerSecond, 1.5)));
    zoomOut.addEventListener('click', () => this.setZoom(zoom(this.pxPerSecond, 1 / 1.5)));
    this.fileInput.addEventListener('change', () => {
      const file = this.fileInput.files?.[0];
      if (file) void this.upload(file);
      this.fileInput.value = '';
    });
    this.uploadEl.addEventListener('dragover', (e) => {
      if (!this.canEdit()) return;
      e.preventDefault();
      this.uploadEl.classList.add('drag');
    });
    this.uploadEl.addEventListener('dragleave', () => this.uploadEl.classList.remove('drag'));
    this.uploadEl.addEventListener('drop', (e) => {
      e.preventDefault();
      this.uploadEl.classList.remove('drag');
      const file = e.dataTransfer?.files?.[0];
      if (file && this.canEdit()) void this.upload(file);
    });

    this.doc = new Y.Doc();
    sessionMap(this.doc).observeDeep(this.onDocChange);
    tracksMap(this.doc).observeDeep(this.onDocChange);
    trackOrder(this.doc).observeDeep(this.onDocChange);

    // disableBc: the server is the only path between copies of a document, so its
    // access checks and its epoch (4410 after a restore) cannot be bypassed by a
    // stale copy in another tab.
    this.provider = new WebsocketProvider(syncUrl(window.location), opts.sessionId, this.doc, {
      params: { token: opts.token },
      disableBc: true,
    });
    this.provider.awareness.setLocalStateField('user', {
      name: opts.user.name || opts.user.email,
      color: userColor(opts.user.id),
    } satisfies PresenceUser);
    this.provider.awareness.on('change', this.onAwarenessChange);

    this.provider.on('status', ({ status }) => {
      if (status === 'connecting') this.setState('connecting');
      else if (status === 'connected') this.setState(this.provider.synced ? 'synced' : 'connected');
      else this.setState('closed');
    });
    this.provider.on('sync', (synced) => {
      if (synced) {
        this.everSynced = true;
        this.setState('synced');
      } else if (this.provider.wsconnected) {
        this.setState('connected');
      }
    });
    this.provider.on('connection-close', (event) => {
      const terminal = terminalState(event?.code);
      this.setState(terminal ?? 'closed');
    });
    this.provider.on('closed', ({ code }) => {
      // any other permanent close (4400-4499) the server chose
      if (!terminalState(code)) this.setState('closed');
    });

    this.render();
    this.renderPresence();
    this.tick();
  }

  /** Role learnt after opening (e.g. the session list arrived later). */
  setRole(role: string | null, listTitle?: string | null): void {
    this.role = role;
    if (listTitle !== undefined) this.opts.listTitle = listTitle;
    this.render();
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    cancelAnimationFrame(this.rafId);
    this.stopListening();
    this.provider.awareness.off('change', this.onAwarenessChange);
    this.provider.destroy();
    this.doc.destroy();
    this.root.remove();
  }

  private canEdit(): boolean {
    return (
      !this.destroyed &&
      this.everSynced &&
      !isTerminal(this.state) &&
      this.role !== null &&
      this.role !== 'viewer'
    );
  }

  private setState(state: ConnState): void {
    if (this.destroyed) return;
    // once the server said "stop" (4401/4403/4410), later events don't change the verdict
    if (isTerminal(this.state) && !isTerminal(state)) return;
    this.state = state;
    this.statusEl.dataset.state = state;
    this.statusEl.textContent = stateLabel(state);
    this.renderNotice();
    this.render();
  }

  private renderNotice(): void {
    const el = this.noticeEl;
    el.replaceChildren();
    switch (this.state) {
      case 'unauthenticated':
        el.append('You are not signed in (or your sign-in expired). ', h('a', { href: '#/' }, 'Sign in again'), '.');
        break;
      case 'forbidden':
        el.append('You have no access to this session. ', h('a', { href: '#/' }, 'Back to your sessions'), '.');
        break;
      case 'restored': {
        const btn = h('button', { type: 'button', testid: 'reload' }, 'Reload');
        btn.addEventListener('click', () => window.location.reload());
        el.append('This session was restored from a backup; reload to see it. ', btn);
        break;
      }
      default:
        el.hidden = true;
        return;
    }
    el.hidden = false;
  }

  private scheduleRender(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  private render(): void {
    if (this.destroyed) return;
    const title = docTitle(this.doc) ?? this.opts.listTitle ?? 'Untitled session';
    if (this.titleEl.textContent !== title) this.titleEl.textContent = title;
    document.title = `${title} — Escenario`;
    this.roleEl.textContent = this.role ?? '…';
    this.roleEl.hidden = this.role === null;

    const editable = this.canEdit();
    this.addBtn.disabled = !editable;
    this.bodyEl.hidden = isTerminal(this.state) && !this.everSynced;
    this.root.classList.toggle('read-only', this.role === 'viewer');

    this.playBtn.disabled = !editable;
    this.stopBtn.disabled = !editable;
    this.uploadEl.hidden = !editable;
    this.fileInput.disabled = !editable;
    const transport = readTransport(this.doc);
    this.transportEl.dataset.playing = String(transport.playing);
    this.playBtn.setAttribute('aria-pressed', String(transport.playing));
    this.playBtn.classList.toggle('active', transport.playing);
    const bpm = readBpm(this.doc);
    const ts = readTimeSignature(this.doc);
    this.tempoEl.textContent = `${bpm} BPM  ${ts[0]}/${ts[1]}`;

    const tracks = readTracks(this.doc);
    let end = 0;
    const clipsByTrack = new Map<string, ClipView[]>();
    for (const t of tracks) {
      const clips = readClips(this.doc, t.id);
      clipsByTrack.set(t.id, clips);
      for (const c of clips) end = Math.max(end, c.start + (c.length || 4));
    }
    this.timelineSeconds = Math.max(60, Math.ceil((end + 16) / 10) * 10);
    this.renderTimeline(bpm, ts);
    const keep = new Set(tracks.map((t) => t.id));
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    let prev: Element | null = null;
    for (const track of tracks) {
      let row = this.rows.get(track.id);
      if (!row) {
        row = this.createRow(track.id);
        this.rows.set(track.id, row);
      }
      this.updateRow(row, track, editable);
      this.renderClips(row, track, clipsByTrack.get(track.id) ?? []);
      const expectedPosition: Element | null = prev ? prev.nextElementSibling : this.trackList.firstElementChild;
      if (expectedPosition !== row) {
        if (prev) prev.after(row);
        else this.trackList.prepend(row);
      }
      prev = row;
    }
    this.emptyEl.hidden = tracks.length > 0;
  }

  private createRow(id: string): HTMLLIElement {
    const input = h('input', {
      type: 'text',
      testid: 'track-name',
      class: 'track-name',
      'aria-label': 'Track name',
      maxlength: 200,
      spellcheck: 'false',
      autocomplete: 'off',
    });
    input.addEventListener('input', () => {
      if (!this.canEdit()) return;
      const clean = sanitizeTrackName(input.value);
      if (clean !== input.value) setInputValue(input, clean);
      renameTrack(this.doc, id, clean);
    });
    const del = h('button', { type: 'button', testid: 'delete-track', class: 'icon danger', title: 'Delete track' }, '✕');
    del.addEventListener('click', () => {
      if (this.canEdit()) deleteTrack(this.doc, id);
    });
    const mute = h('button', { type: 'button', testid: 'track-mute', class: 'toggle mute', title: 'Mute', 'aria-pressed': 'false' }, 'M');
    const solo = h('button', { type: 'button', testid: 'track-solo', class: 'toggle solo', title: 'Solo', 'aria-pressed': 'false' }, 'S');
    mute.addEventListener('click', () => {
      if (this.canEdit()) setTrackField(this.doc, id, 'mute', mute.getAttribute('aria-pressed') !== 'true');
    });
    solo.addEventListener('click', () => {
      if (this.canEdit()) setTrackField(this.doc, id, 'solo', solo.getAttribute('aria-pressed') !== 'true');
    });
    const gain = h('input', { type: 'range', testid: 'track-gain', class: 'fader', min: 0, max: FADER_STEPS, step: 1, 'aria-label': 'Volume (dB)' });
    const gainVal = h('span', { class: 'val', testid: 'track-gain-value' });
    gain.addEventListener('input', () => {
      if (!this.canEdit()) return;
      const db = faderToDb(Number(gain.value) / FADER_STEPS);
      gainVal.textContent = formatDb(db);
      setTrackField(this.doc, id, 'gainDb', db);
    });
    gain.addEventListener('dblclick', () => {
      if (this.canEdit()) setTrackField(this.doc, id, 'gainDb', 0);
    });
    const pan = h('input', { type: 'range', testid: 'track-pan', class: 'pan', min: -100, max: 100, step: 1, 'aria-label': 'Pan' });
    const panVal = h('span', { class: 'val', testid: 'track-pan-value' });
    pan.addEventListener('input', () => {
      if (!this.canEdit()) return;
      const v = Number(pan.value) / 100;
      panVal.textContent = formatPan(v);
      setTrackField(this.doc, id, 'pan', v);
    });
    pan.addEventListener('dblclick', () => {
      if (this.canEdit()) setTrackField(this.doc, id, 'pan', 0);
    });
    const meter = h('div', { class: 'meter', testid: 'track-meter', 'data-level': '' }, h('div', { class: 'fill' }));
    const head = h(
      'div',
      { class: 'track-head' },
      h('div', { class: 'head-row' }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), input, h('span', { class: 'kind badge' }), del),
      h('div', { class: 'head-row mixer' }, mute, solo, gain, gainVal),
      h('div', { class: 'head-row mixer' }, h('span', { class: 'muted small' }, 'Pan'), pan, panVal, meter),
    );
    const lane = h('div', { class: 'lane lane-area', testid: 'lane' });
    return h('li', { class: 'track', testid: 'track', 'data-track-id': id }, head, lane);
  }

  private updateRow(row: HTMLLIElement, track: TrackView, editable: boolean): void {
    row.style.setProperty('--track-color', track.color);
    const swatch = row.querySelector<HTMLSpanElement>('.swatch');
    if (swatch) swatch.style.background = track.color;
    const input = row.querySelector<HTMLInputElement>('input.track-name');
    if (input) {
      setInputValue(input, track.name);
      input.disabled = !editable;
      input.placeholder = 'Untitled track';
    }
    const kind = row.querySelector<HTMLSpanElement>('.kind');
    if (kind) kind.textContent = track.kind;
    const gain = row.querySelector<HTMLInputElement>('input[data-testid="track-gain"]');
    if (gain) {
      const pos = String(Math.round(dbToFader(track.gainDb) * FADER_STEPS));
      if (faderToDb(Number(gain.value) / FADER_STEPS) !== track.gainDb || gain.value === '') gain.value = pos;
      gain.disabled = !editable;
      gain.dataset.db = String(track.gainDb);
    }
    const gainVal = row.querySelector<HTMLSpanElement>('[data-testid="track-gain-value"]');
    if (gainVal) gainVal.textContent = formatDb(track.gainDb);
    const pan = row.querySelector<HTMLInputElement>('input[data-testid="track-pan"]');
    if (pan) {
      pan.value = String(Math.round(track.pan * 100));
      pan.disabled = !editable;
    }
    const panVal = row.querySelector<HTMLSpanElement>('[data-testid="track-pan-value"]');
    if (panVal) panVal.textContent = formatPan(track.pan);
    for (const [sel, on] of [
      ['track-mute', track.mute],
      ['track-solo', track.solo],
    ] as const) {
      const b = row.querySelector<HTMLButtonElement>(`button[data-testid="${sel}"]`);
      if (!b) continue;
      b.setAttribute('aria-pressed', String(on));
      b.disabled = !editable;
    }
    const del = row.querySelector<HTMLButtonElement>('button[data-testid="delete-track"]');
    if (del) del.disabled = !editable;
  }

  private renderTimeline(bpm: number, ts: [number, number]): void {
    const pps = this.pxPerSecond;
    const width = Math.round(secondsToPx(this.timelineSeconds, pps));
    const beatPx = beatSeconds(bpm, ts[1]) * pps;
    this.arrangeEl.style.setProperty('--lane-width', `${width}px`);
    this.arrangeEl.style.setProperty('--beat-px', `${beatPx}px`);
    this.arrangeEl.style.setProperty('--bar-px', `${beatPx * ts[0]}px`);
    this.arrangeEl.classList.toggle('dense', beatPx < 8);
    const key = `${pps}|${bpm}|${ts.join('/')}|${this.timelineSeconds}`;
    if (this.rulerEl.dataset.key === key) return;
    this.rulerEl.dataset.key = key;
    const marks: HTMLElement[] = [];
    const lines = gridLines(bpm, ts, this.timelineSeconds, pps, 8).filter((l) => l.isBar);
    const labelEvery = Math.max(1, Math.ceil(36 / Math.max(1, beatPx * ts[0])));
    for (const l of lines) {
      if ((l.bar - 1) % labelEvery !== 0) continue;
      const m = h('span', { class: 'bar-mark' }, String(l.bar));
      m.style.left = `${l.x}px`;
      marks.push(m);
    }
    this.rulerEl.replaceChildren(...marks);
  }

  private renderClips(row: HTMLLIElement, track: TrackView, clips: ClipView[]): void {
    const lane = row.querySelector<HTMLDivElement>('.lane');
    if (!lane) return;
    const existing = new Map<string, HTMLDivElement>();
    for (const el of lane.querySelectorAll<HTMLDivElement>('.clip')) existing.set(el.dataset.clipId ?? '', el);
    const pps = this.pxPerSecond;
    for (const clip of clips) {
      let el = existing.get(clip.id);
      existing.delete(clip.id);
      if (!el) {
        el = h(
          'div',
          { class: 'clip', testid: 'clip', 'data-clip-id': clip.id },
          h('span', { class: 'clip-name' }),
          h('canvas', { testid: 'clip-waveform', class: 'wave', height: 56 }),
        );
        lane.append(el);
      }
      const length = clip.length > 0 ? clip.length : 4;
      const widthPx = Math.max(4, Math.round(secondsToPx(length, pps)));
      el.style.left = `${secondsToPx(clip.start, pps)}px`;
      el.style.width = `${widthPx}px`;
      const name = el.querySelector<HTMLSpanElement>('.clip-name');
      if (name) name.textContent = track.name;
      const canvas = el.querySelector<HTMLCanvasElement>('canvas');
      const drawKey = `${clip.assetId}|${clip.offset}|${length}|${widthPx}|${track.color}`;
      if (canvas && canvas.dataset.key !== drawKey) {
        canvas.dataset.key = drawKey;
        canvas.dataset.drawn = 'false';
        void this.drawWaveform(canvas, clip, widthPx, track.color, drawKey);
      }
    }
    for (const el of existing.values()) el.remove();
  }

  private fetchPeaks(assetId: string, width: number): Promise<Peaks> {
    const key = `${assetId}|${width}`;
    let p = this.peaks.get(key);
    if (!p) {
      p = fetch(`/api/assets/${encodeURIComponent(assetId)}/peaks?width=${width}`, {
        headers: { Authorization: `Bearer ${this.opts.token}` },
      }).then(async (res) => {
        if (!res.ok) throw new Error(`peaks: HTTP ${res.status}`);
        const body = (await res.json()) as { min?: unknown; max?: unknown };
        const min = Array.isArray(body.min) ? body.min.map(Number) : [];
        const max = Array.isArray(body.max) ? body.max.map(Number) : [];
        return { min, max };
      });
      p.catch(() => this.peaks.delete(key));
      this.peaks.set(key, p);
    }
    return p;
  }

  private async drawWaveform(
    canvas: HTMLCanvasElement,
    clip: ClipView,
    widthPx: number,
    color: string,
    key: string,
  ): Promise<void> {
    const cw = Math.min(widthPx, 8192);
    canvas.width = cw;
    let peaks: Peaks;
    try {
      // peaks span the whole asset: exact for a clip that plays all of it (an upload);
      // a trimmed clip (offset/length) is not cropped yet
      peaks = await this.fetchPeaks(clip.assetId, Math.min(65536, Math.max(1, cw)));
    } catch {
      return;
    }
    if (this.destroyed || canvas.dataset.key !== key) return;
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = color;
    ctx.globalAlpha = 0.9;
    for (const col of waveColumns(peaks, canvas.width, canvas.height)) ctx.fillRect(col.x, col.y, 1, col.h);
    canvas.dataset.drawn = 'true';
  }

  private setZoom(pps: number): void {
    if (pps === this.pxPerSecond) return;
    this.pxPerSecond = pps;
    this.render();
  }

  private tick = (): void => {
    if (this.destroyed) return;
    const t = readTransport(this.doc);
    const pos = transportPosition(t, Date.now());
    const text = `${barBeatLabel(pos, readBpm(this.doc), readTimeSignature(this.doc))}  ${formatTime(pos)}`;
    if (this.posEl.textContent !== text) this.posEl.textContent = text;
    this.playheadEl.style.transform = `translateX(${secondsToPx(pos, this.pxPerSecond)}px)`;
    this.rafId = requestAnimationFrame(this.tick);
  };

  private renderMeters(): void {
    if (this.destroyed) return;
    const server = this.provider.awareness.getStates().get(0) as
      | { meters?: { master?: { peakDb?: unknown }; tracks?: Record<string, { peakDb?: unknown }> } }
      | undefined;
    const meters = server?.meters;
    const setMeter = (el: Element | null, peak: unknown): void => {
      if (!(el instanceof HTMLElement)) return;
      const db = maxPeakDb(peak);
      const frac = meterFraction(db);
      el.dataset.level = db === null ? '' : String(db);
      const fill = el.querySelector<HTMLElement>('.fill');
      if (fill) {
        fill.style.width = `${(frac * 100).toFixed(1)}%`;
        fill.classList.toggle('hot', db !== null && db > -1);
      }
    };
    setMeter(this.masterMeter, meters?.master?.peakDb);
    for (const [id, row] of this.rows) {
      setMeter(row.querySelector('[data-testid="track-meter"]'), meters?.tracks?.[id]?.peakDb);
    }
  }

  private async upload(file: File): Promise<void> {
    if (!this.canEdit()) return;
    this.uploadMsg.hidden = true;
    this.uploadMsg.textContent = '';
    this.progressEl.hidden = false;
    this.progressEl.value = 0;
    this.uploadEl.classList.add('busy');
    try {
      const asset = await uploadAsset(this.opts.sessionId, this.opts.token, file, (f) => {
        this.progressEl.value = f;
      });
      this.progressEl.value = 1;
      if (this.destroyed) return;
      addTrackWithClip(this.doc, { ...asset, name: file.name }, { track: newId(), clip: newId() });
    } catch (err) {
      this.uploadMsg.textContent = `Could not add “${file.name}”: ${errorMessage(err)}`;
      this.uploadMsg.hidden = false;
    } finally {
      this.uploadEl.classList.remove('busy');
      this.progressEl.hidden = true;
    }
  }

  private toggleListen(): void {
    if (this.listenBtn.getAttribute('aria-pressed') === 'true') {
      this.stopListening();
      return;
    }
    this.listenBtn.setAttribute('aria-pressed', 'true');
    this.listenBtn.classList.add('active');
    this.audioEl.src = `/api/sessions/${encodeURIComponent(this.opts.sessionId)}/preview.ogg?token=${encodeURIComponent(this.opts.token)}`;
    this.audioEl.play().catch((err: unknown) => {
      if (err instanceof DOMException && err.name === 'AbortError') return;
      this.stopListening();
      this.uploadMsg.textContent = `Cannot play the preview: ${errorMessage(err)}`;
      this.uploadMsg.hidden = false;
    });
  }

  private stopListening(): void {
    this.listenBtn.setAttribute('aria-pressed', 'false');
    this.listenBtn.classList.remove('active');
    this.audioEl.pause();
    if (this.audioEl.hasAttribute('src')) {
      this.audioEl.removeAttribute('src');
      this.audioEl.load();
    }
  }

  private async exportMixdown(): Promise<void> {
    this.exportBtn.disabled = true;
    const label = this.exportBtn.textContent;
    this.exportBtn.textContent = 'Rendering…';
    try {
      await downloadMixdown(this.opts.sessionId, this.opts.token, this.exportFormat.value);
    } catch (err) {
      this.uploadMsg.textContent = `Export failed: ${errorMessage(err)}`;
      this.uploadMsg.hidden = false;
    } finally {
      this.exportBtn.disabled = false;
      this.exportBtn.textContent = label;
    }
  }

  private renderPresence(): void {
    if (this.destroyed) return;
    const self = this.doc.clientID;
    const entries: { name: string; color: string; self: boolean }[] = [];
    for (const [clientId, state] of this.provider.awareness.getStates()) {
      const user = (state as { user?: Partial<PresenceUser> }).user;
      if (!user || typeof user.name !== 'string') continue;
      entries.push({
        name: user.name,
        color: typeof user.color === 'string' ? user.color : '#888888',
        self: clientId === self,
      });
    }
    entries.sort((a, b) => Number(b.self) - Number(a.self) || a.name.localeCompare(b.name));
    this.presenceList.replaceChildren(
      ...entries.map((e) => {
        const dot = h('span', { class: 'dot', 'aria-hidden': 'true' });
        dot.style.background = e.color;
        return h('li', { testid: 'presence-user', 'data-self': e.self }, dot, e.name, e.self ? h('span', { class: 'muted' }, ' (you)') : null);
      }),
    );
  }
}
