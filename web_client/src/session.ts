// An opened session: the Yjs document synced over `/sync/<id>`, presence over awareness, and
// the DAW around it: transport bar, arrange timeline (editing gestures), mixer strips in the
// track headers, undo/redo of one's own edits, keyboard shortcuts, metronome, uploads, the
// server's live preview and mixdown export.

import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';

import type { User } from './api';
import { ApiClient, errorMessage } from './api';
import { AssetStore } from './assets';
import { duplicateStart, type ClipGeom } from './clipmath';
import { isTerminal, stateLabel, syncUrl, terminalState, type ConnState } from './connection';
import {
  addTrackWithClip,
  maxPeakDb,
  meterFraction,
  readBpm,
  readClips,
  readTimeSignature,
  setTrackField,
  zoom,
  type ClipView,
} from './daw';
import { h } from './dom';
import { deleteClips, duplicateClips, moveClips, reorderTrack, setClipGeometry, setTrackColor, type ClipMove, type ClipRef } from './edits';
import { JamPanel } from './jampanel';
import { cancelJob, jobActivity, readJobs, startErrorMessage, startJob, type JobKind, type JobView } from './jobs';
import { JobsPanel } from './jobspanel';
import { ExportDialog } from './export';
import { SharePanel } from './share';
import { MembersDialog } from './members';
import { Metronome } from './metronome';
import { LocalPlayback } from './playback';
import { levelDb } from './playmath';
import { ColorPalette, ShortcutsDialog } from './overlays';
import { cursorTime, readPeers, selectionsByOthers, userColor, type LocalPresence, type Peer, type PresenceUser } from './presence';
import { Selection } from './selection';
import { isTextEntry, shortcutFor, type Action } from './shortcuts';
import { Timeline, type TimelineModel } from './timeline';
import { addTrack, deleteTrack, docTitle, newId, readTracks, renameTrack, sessionMap, trackOrder, tracksMap, type TrackView } from './tracks';
import { TransportBar } from './transportbar';
import {
  defaultLoop,
  parseBpm,
  parseTimeSignature,
  readTransport,
  seek,
  setBpm,
  setLoop,
  setTimeSignature,
  setTransport,
  toggleLoop,
  transportPosition,
  type Range,
} from './transport';
import { asOneStep, beginGroup, createUndoManager, endGroup } from './undo';
import { uploadAsset } from './upload';

export { userColor } from './presence';

export interface SessionViewOptions {
  sessionId: string;
  token: string;
  user: User;
  /** Title from the session list, shown until the document has its own. */
  listTitle: string | null;
  /** Role from the session list; null while unknown (treated as read-only). */
  role: string | null;
}

/** User Timing marks for the first synced timeline and its first waveforms (the perf test reads them). */
export const MARK_TIMELINE = 'escenario:timeline';
export const MARK_WAVEFORMS = 'escenario:waveforms';

export class SessionView {
  readonly root: HTMLElement;
  private readonly opts: SessionViewOptions;
  private readonly doc: Y.Doc;
  private readonly provider: WebsocketProvider;
  private readonly undo: Y.UndoManager;
  private readonly selection = new Selection();
  private readonly assets: AssetStore;
  private readonly metronome: Metronome;
  private readonly playback: LocalPlayback;
  /** Local playback was on when "Listen" switched it off: it comes back when listening stops. */
  private localBeforeListen = false;
  private state: ConnState = 'connecting';
  private role: string | null;
  private everSynced = false;
  private destroyed = false;
  private renderQueued = false;
  private snapOn = true;
  private markedTimeline = false;
  private markedWaves = false;
  private presenceKey = '';
  private cursorKey = '';
  private localPresence: LocalPresence = { selection: { clips: [], tracks: [] }, cursor: null, activity: null };
  private rafId = 0;
  private tracks: TrackView[] = [];
  private clips = new Map<string, ClipView[]>();

  private readonly titleEl: HTMLHeadingElement;
  private readonly roleEl: HTMLSpanElement;
  private readonly statusEl: HTMLSpanElement;
  private readonly noticeEl: HTMLDivElement;
  private readonly presenceList: HTMLUListElement;
  private readonly emptyEl: HTMLParagraphElement;
  /** Presence, toolbar and tracks: hidden when the server refused us before any sync. */
  private readonly bodyEl: HTMLDivElement;
  private readonly bar: TransportBar;
  private readonly timeline: Timeline;
  private readonly help: ShortcutsDialog;
  private readonly palette: ColorPalette;
  private readonly uploadEl: HTMLDivElement;
  private readonly fileInput: HTMLInputElement;
  private readonly progressEl: HTMLProgressElement;
  private readonly uploadMsg: HTMLDivElement;
  private readonly api: ApiClient;
  private readonly jobsPanel: JobsPanel;
  private readonly exportDialog: ExportDialog;
  private readonly sharePanel: SharePanel;
  private readonly membersDialog: MembersDialog;
  private readonly jamPanel: JamPanel;
  private jobsKey = '';
  private uploading = false;

  private readonly onDocChange = (): void => this.scheduleRender();
  private readonly onJobsChange = (): void => this.renderJobs();
  private readonly onAwarenessChange = (): void => {
    this.renderPresence();
    this.renderMeters();
  };

  constructor(opts: SessionViewOptions) {
    this.opts = opts;
    this.role = opts.role;
    this.doc = new Y.Doc();
    this.undo = createUndoManager(this.doc);
    this.assets = new AssetStore(opts.sessionId, opts.token, () => this.scheduleRender());
    this.metronome = new Metronome(
      {
        transport: () => readTransport(this.doc),
        bpm: () => readBpm(this.doc),
        timeSignature: () => readTimeSignature(this.doc),
      },
      (n) => this.bar.setMetronome(true, n),
    );

    this.titleEl = h('h2', { testid: 'doc-title', class: 'doc-title' });
    this.roleEl = h('span', { testid: 'role', class: 'badge' });
    this.statusEl = h('span', { testid: 'status', class: 'status', 'data-state': 'connecting', role: 'status' });
    this.noticeEl = h('div', { testid: 'session-notice', class: 'notice', hidden: true });
    this.presenceList = h('ul', { class: 'presence-list' });
    this.emptyEl = h('p', { class: 'muted empty', testid: 'no-tracks' }, 'No tracks yet.');
    this.bar = new TransportBar();
    this.playback = new LocalPlayback({
      token: opts.token,
      doc: this.doc,
      onStatus: (s) =>
        this.bar.setLocalAudio(this.playback.on, {
          ...s,
          rmsDb: s.meter ? [levelDb(s.meter.rms[0]), levelDb(s.meter.rms[1])] : null,
        }),
    });
    this.help = new ShortcutsDialog();
    this.palette = new ColorPalette((trackId, color) => {
      if (this.canEdit()) asOneStep(this.undo, () => setTrackColor(this.doc, trackId, color));
    });
    this.timeline = new Timeline({
      canEdit: () => this.canEdit(),
      snapOn: () => this.snapOn,
      rename: (id, name) => renameTrack(this.doc, id, name),
      gestureStart: () => beginGroup(this.undo),
      gestureEnd: () => endGroup(this.undo),
      remove: (id) => this.edit(() => deleteTrack(this.doc, id)),
      toggle: (id, key) => {
        const t = this.tracks.find((x) => x.id === id);
        if (t) this.edit(() => setTrackField(this.doc, id, key, !t[key]));
      },
      set: (id, key, value) => setTrackField(this.doc, id, key, value),
      pickColor: (id, anchor) => {
        const t = this.tracks.find((x) => x.id === id);
        this.palette.openFor(id, anchor, t?.color ?? '');
      },
      select: (id) => this.updateSelection(() => this.selection.selectTrack(id)),
      clickClip: (ref, additive) => this.updateSelection(() => this.selection.clickClip(ref, additive)),
      clickLane: (trackId) => this.updateSelection(() => this.selection.selectTrack(trackId)),
      moveClips: (moves: ClipMove[]) => {
        const refs = this.edit(() => moveClips(this.doc, moves));
        if (refs) this.updateSelection(() => this.selection.setClips(refs));
      },
      trimClip: (ref: ClipRef, geom: ClipGeom) => this.edit(() => setClipGeometry(this.doc, ref, geom)),
      seek: (t) => {
        if (this.canEdit()) seek(this.doc, t);
      },
      setLoop: (range: Range) => this.edit(() => setLoop(this.doc, range)),
      reorder: (id, to) => this.edit(() => reorderTrack(this.doc, id, to)),
      cursor: (time, trackId) => this.setCursor(time, trackId),
      assetSeconds: (id) => this.assets.seconds(id),
      peaks: (id) => this.assets.peaks(id),
      waveDrawn: () => this.markReady(),
    });

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

    this.api = new ApiClient({ get: () => opts.token, set: () => undefined });
    this.exportDialog = new ExportDialog({ sessionId: opts.sessionId, token: opts.token, doc: this.doc });
    this.sharePanel = new SharePanel(this.api, opts.sessionId);
    this.membersDialog = new MembersDialog(this.api, opts.sessionId);
    this.jobsPanel = new JobsPanel({
      start: (kind) => void this.startJob(kind),
      cancel: (id) => void this.cancelJob(id),
    });
    this.jamPanel = new JamPanel({
      sessionId: opts.sessionId,
      token: opts.token,
      name: opts.user.name || opts.user.email,
      doc: this.doc,
      canEdit: () => this.canEdit(),
      activity: (a) => this.setJamActivity(a),
    });

    this.bodyEl = h(
      'div',
      { class: 'session-body' },
      h('div', { class: 'presence', testid: 'presence' }, h('span', { class: 'muted' }, 'Here now:'), this.presenceList),
      this.bar.root,
      this.jamPanel.root,
      this.uploadMsg,
      this.uploadEl,
      this.jobsPanel.root,
      this.timeline.root,
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
      this.help.root,
      this.palette.root,
      this.exportDialog.root,
      this.sharePanel.root,
      this.membersDialog.root,
    );

    this.wireControls();

    sessionMap(this.doc).observeDeep(this.onDocChange);
    tracksMap(this.doc).observeDeep(this.onDocChange);
    trackOrder(this.doc).observeDeep(this.onDocChange);
    this.doc.getMap('jobs').observeDeep(this.onJobsChange);
    for (const ev of ['stack-item-added', 'stack-item-popped', 'stack-cleared'] as const) {
      this.undo.on(ev, () => this.scheduleRender());
    }

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

    document.addEventListener('keydown', this.onKeyDown);
    document.addEventListener('keyup', this.onKeyUp);
    document.addEventListener('pointerdown', this.onDocPointerDown, true);
    void this.assets.prefetch();
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
    document.removeEventListener('keydown', this.onKeyDown);
    document.removeEventListener('keyup', this.onKeyUp);
    document.removeEventListener('pointerdown', this.onDocPointerDown, true);
    this.stopListening();
    this.jamPanel.destroy();
    this.exportDialog.destroy();
    this.metronome.destroy();
    this.playback.destroy();
    this.timeline.destroy();
    this.undo.destroy();
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

  /** A discrete edit gesture: only for editors, one undo step. Returns the edit's result. */
  private edit<T>(fn: () => T): T | undefined {
    if (!this.canEdit()) return undefined;
    return asOneStep(this.undo, fn);
  }

  // ---------------------------------------------------------------- controls

  private wireControls(): void {
    const b = this.bar;
    this.timeline.addBtn.addEventListener('click', () => {
      const id = this.edit(() => addTrack(this.doc));
      if (!id) return;
      this.render();
      const input = this.timeline.rowOf(id)?.querySelector<HTMLInputElement>('input.track-name');
      input?.focus();
      input?.select();
    });
    b.play.addEventListener('click', () => {
      if (this.canEdit()) setTransport(this.doc, true);
    });
    b.stop.addEventListener('click', () => {
      if (this.canEdit()) setTransport(this.doc, false);
    });
    b.toStart.addEventListener('click', () => this.runAction('to-start'));
    b.loop.addEventListener('click', () => this.runAction('loop'));
    b.metronome.addEventListener('click', () => this.runAction('metronome'));
    b.localAudio.addEventListener('click', () => this.playback.setEnabled(!this.playback.on));
    b.snap.addEventListener('click', () => {
      this.snapOn = !this.snapOn;
      b.snap.setAttribute('aria-pressed', String(this.snapOn));
    });
    b.undo.addEventListener('click', () => this.runAction('undo'));
    b.redo.addEventListener('click', () => this.runAction('redo'));
    b.help.addEventListener('click', () => this.help.toggle());
    b.bpm.addEventListener('change', () => {
      const bpm = parseBpm(b.bpm.value);
      if (bpm !== null) this.edit(() => setBpm(this.doc, bpm));
      b.bpm.setAttribute('aria-invalid', String(bpm === null));
      b.bpm.blur();
      this.render();
    });
    b.bpm.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') b.bpm.blur();
    });
    const commitTs = (): void => {
      const ts = parseTimeSignature(b.tsBeats.value, b.tsUnit.value);
      if (ts) this.edit(() => setTimeSignature(this.doc, ts));
      b.tsBeats.setAttribute('aria-invalid', String(ts === null));
      this.render();
    };
    b.tsBeats.addEventListener('change', commitTs);
    b.tsBeats.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') b.tsBeats.blur();
    });
    b.tsUnit.addEventListener('change', commitTs);
    b.listen.addEventListener('click', () => this.toggleListen());
    b.extras.append(this.exportDialog.button, this.sharePanel.button, this.membersDialog.button);
    b.zoomIn.addEventListener('click', () => this.timeline.setZoom(zoom(this.timeline.pxPerSecond, 1.5)));
    b.zoomOut.addEventListener('click', () => this.timeline.setZoom(zoom(this.timeline.pxPerSecond, 1 / 1.5)));

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
  }

  private readonly onDocPointerDown = (e: PointerEvent): void => {
    if (this.palette.isOpen && !this.palette.root.contains(e.target as Node)) this.palette.close();
  };

  private readonly onKeyDown = (e: KeyboardEvent): void => {
    if (this.destroyed || !this.root.isConnected) return;
    const action = shortcutFor(e);
    if (!action) return;
    const active = document.activeElement as HTMLElement | null;
    if (isTextEntry(active)) {
      // typing: only Escape, which leaves the field
      if (action === 'escape') active?.blur();
      return;
    }
    if (this.help.isOpen && action !== 'help' && action !== 'escape') return;
    e.preventDefault();
    this.runAction(action);
  };

  /** A focused button would also "click" on Space's release: the shortcut already acted. */
  private readonly onKeyUp = (e: KeyboardEvent): void => {
    if (e.key === ' ' && !isTextEntry(document.activeElement as HTMLElement | null)) e.preventDefault();
  };

  private runAction(action: Action): void {
    const transport = readTransport(this.doc);
    switch (action) {
      case 'play-stop':
        if (this.canEdit()) setTransport(this.doc, !transport.playing);
        return;
      case 'to-start':
        if (this.canEdit()) {
          seek(this.doc, 0);
          this.timeline.reveal(0);
        }
        return;
      case 'loop': {
        const pos = transportPosition(transport, Date.now());
        const fallback = this.selectionSpan() ?? defaultLoop(pos, readBpm(this.doc), readTimeSignature(this.doc));
        this.edit(() => toggleLoop(this.doc, fallback));
        return;
      }
      case 'metronome':
        if (this.metronome.on) this.metronome.stop();
        else this.metronome.start();
        this.bar.setMetronome(this.metronome.on, this.metronome.clicks);
        return;
      case 'delete':
        this.deleteSelection();
        return;
      case 'duplicate':
        this.duplicateSelection();
        return;
      case 'undo':
        if (this.canEdit()) this.undo.undo();
        return;
      case 'redo':
        if (this.canEdit()) this.undo.redo();
        return;
      case 'mute':
      case 'solo': {
        const id = this.selection.track;
        const t = id ? this.tracks.find((x) => x.id === id) : undefined;
        if (t) this.edit(() => setTrackField(this.doc, t.id, action, !t[action]));
        return;
      }
      case 'help':
        this.help.toggle();
        return;
      case 'escape':
        if (this.help.isOpen) this.help.close();
        else if (this.palette.isOpen) this.palette.close();
        else if (!this.timeline.cancelGesture()) this.updateSelection(() => this.selection.clear());
        return;
    }
  }

  /** The time span of the selected clips, as a loop for the L key when none was set yet. */
  private selectionSpan(): Range | null {
    let lo = Infinity;
    let hi = -Infinity;
    for (const ref of this.selection.refs()) {
      const c = this.clips.get(ref.trackId)?.find((x) => x.id === ref.clipId);
      if (!c) continue;
      lo = Math.min(lo, c.start);
      hi = Math.max(hi, c.start + (c.length || (this.assets.seconds(c.assetId) ?? 0) - c.offset));
    }
    return hi > lo ? [lo, hi] : null;
  }

  private deleteSelection(): void {
    if (!this.canEdit()) return;
    const refs = this.selection.refs();
    if (refs.length > 0) {
      this.edit(() => deleteClips(this.doc, refs));
      this.updateSelection(() => this.selection.setClips([]));
    } else if (this.selection.track) {
      const id = this.selection.track;
      this.edit(() => deleteTrack(this.doc, id));
      this.updateSelection(() => this.selection.clear());
    }
  }

  private duplicateSelection(): void {
    if (!this.canEdit()) return;
    const items: (ClipRef & { start: number; newId: string })[] = [];
    for (const ref of this.selection.refs()) {
      const c = this.clips.get(ref.trackId)?.find((x) => x.id === ref.clipId);
      if (!c) continue;
      items.push({ ...ref, start: duplicateStart(c, this.assets.seconds(c.assetId)), newId: newId() });
    }
    if (items.length === 0) return;
    const copies = this.edit(() => duplicateClips(this.doc, items));
    if (copies) this.updateSelection(() => this.selection.setClips(copies));
  }

  private updateSelection(fn: () => void): void {
    fn();
    this.publishSelection();
    this.render();
  }

  private publishSelection(): void {
    const sel = this.selection.toPresence();
    const prev = this.localPresence.selection;
    if (sel.clips.join('\u0000') === prev.clips.join('\u0000') && sel.tracks.join('\u0000') === prev.tracks.join('\u0000')) return;
    this.localPresence.selection = sel;
    this.provider.awareness.setLocalStateField('selection', sel);
  }

  private setCursor(time: number | null, trackId: string | null): void {
    const cursor = time === null ? null : { time: cursorTime(time), trackId };
    const prev = this.localPresence.cursor;
    if (prev === cursor || (prev && cursor && prev.time === cursor.time && prev.trackId === cursor.trackId)) return;
    this.localPresence.cursor = cursor;
    if (!this.destroyed) this.provider.awareness.setLocalStateField('cursor', cursor);
  }

  private jamActivity: string | null = null;

  private setJamActivity(activity: string | null): void {
    this.jamActivity = activity;
    this.renderJobs();
  }

  private setActivity(activity: string | null): void {
    if (this.localPresence.activity === activity) return;
    this.localPresence.activity = activity;
    if (!this.destroyed) this.provider.awareness.setLocalStateField('activity', activity);
  }

  // ---------------------------------------------------------------- state

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
    this.sharePanel.setOwner(this.role === 'owner');
    this.membersDialog.setRole(this.role);

    const editable = this.canEdit();
    this.bodyEl.hidden = isTerminal(this.state) && !this.everSynced;
    this.root.classList.toggle('read-only', this.role === 'viewer');
    this.uploadEl.hidden = !editable;
    this.fileInput.disabled = !editable;

    const transport = readTransport(this.doc);
    const bpm = readBpm(this.doc);
    const ts = readTimeSignature(this.doc);
    this.bar.update({
      editable,
      playing: transport.playing,
      loop: transport.loop,
      bpm,
      timeSignature: ts,
      canUndo: this.undo.canUndo(),
      canRedo: this.undo.canRedo(),
    });

    this.tracks = readTracks(this.doc);
    this.clips = new Map();
    const where = new Map<string, string>();
    let end = 0;
    for (const t of this.tracks) {
      const clips = readClips(this.doc, t.id);
      this.clips.set(t.id, clips);
      for (const c of clips) {
        if (!where.has(c.id)) where.set(c.id, t.id);
        end = Math.max(end, c.start + (c.length || 4));
      }
    }
    if (transport.loop) end = Math.max(end, transport.loop[1]);
    const trackIds = new Set(this.tracks.map((t) => t.id));
    if (this.selection.reconcile((id) => where.get(id) ?? null, (id) => trackIds.has(id))) this.publishSelection();

    const others = selectionsByOthers(this.peers());
    const model: TimelineModel = {
      tracks: this.tracks,
      clips: this.clips,
      bpm,
      timeSignature: ts,
      loop: transport.loop,
      seconds: Math.max(60, Math.ceil((end + 16) / 10) * 10),
      editable,
      selection: this.selection,
      othersClips: others.clips,
      othersTracks: others.tracks,
    };
    this.timeline.update(model);
    this.emptyEl.hidden = this.tracks.length > 0;
    this.renderJobs();
    this.jamPanel.render();
    this.playback.sync();
    this.markReady();
  }

  /** Record when the synced timeline (and then its waveforms) first showed: User Timing marks. */
  private markReady(): void {
    if (!this.everSynced) return;
    const root = this.timeline.root;
    if (!this.markedTimeline) {
      this.markedTimeline = true;
      performance.mark(MARK_TIMELINE);
      root.dataset.ready = 'true';
    }
    if (!this.markedWaves && this.tracks.length > 0) {
      const waves = root.querySelectorAll<HTMLElement>('[data-testid="clip-waveform"]');
      if (waves.length > 0 && [...waves].every((w) => w.dataset.drawn === 'true')) {
        this.markedWaves = true;
        performance.mark(MARK_WAVEFORMS);
        root.dataset.wavesReady = 'true';
      }
      // otherwise the timeline calls back as each waveform lands
    }
  }

  private peers(): Peer[] {
    return readPeers(this.provider.awareness.getStates(), this.doc.clientID);
  }

  private tick = (): void => {
    if (this.destroyed) return;
    const pos = transportPosition(readTransport(this.doc), Date.now());
    this.bar.showPosition(pos, readBpm(this.doc), readTimeSignature(this.doc));
    this.timeline.setPlayhead(pos);
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
      const level = db === null ? '' : String(db);
      if (el.dataset.level === level) return;
      el.dataset.level = level;
      const fill = el.querySelector<HTMLElement>('.fill');
      if (fill) {
        fill.style.width = `${(frac * 100).toFixed(1)}%`;
        fill.classList.toggle('hot', db !== null && db > -1);
      }
    };
    setMeter(this.bar.masterMeter, meters?.master?.peakDb);
    for (const t of this.tracks) {
      setMeter(this.timeline.rowOf(t.id)?.querySelector('[data-testid="track-meter"]') ?? null, meters?.tracks?.[t.id]?.peakDb);
    }
  }

  private renderPresence(): void {
    if (this.destroyed) return;
    const peers = this.peers();
    // awareness changes many times a second (meters, cursors): touch the DOM only on real change
    const who = JSON.stringify(peers.map((p) => [p.clientId, p.name, p.color, p.clips, p.tracks, p.activity]));
    const where = JSON.stringify(peers.map((p) => [p.clientId, p.cursor, p.cursorTrack]));
    if (where !== this.cursorKey) {
      this.cursorKey = where;
      this.timeline.setPeers(peers);
    }
    if (who === this.presenceKey) return;
    this.presenceKey = who;
    this.presenceList.replaceChildren(
      ...peers.map((p) => {
        const dot = h('span', { class: 'dot', 'aria-hidden': 'true' });
        dot.style.background = p.color;
        return h(
          'li',
          { testid: 'presence-user', 'data-self': p.self, 'data-client-id': p.clientId },
          dot,
          p.name,
          p.self ? h('span', { class: 'muted' }, ' (you)') : null,
          p.activity ? h('span', { class: 'activity muted', testid: 'presence-activity' }, ` · ${p.activity}`) : null,
        );
      }),
    );
    this.timeline.setPeers(peers);
    // others' selections outline clips and tracks
    this.scheduleRender();
  }

  // ---------------------------------------------------------------- AI jobs

  /** The one selected clip that a job can run on, or why there is none. */
  private jobTarget(): { trackId: string; clipId: string; assetId: string } | string {
    if (!this.canEdit()) return this.role === 'viewer' ? 'Viewers cannot run AI tools.' : '';
    const refs = this.selection.refs();
    if (refs.length !== 1) return refs.length === 0 ? 'Select an audio clip to use the AI tools.' : 'Select just one clip.';
    const ref = refs[0]!;
    const track = this.tracks.find((t) => t.id === ref.trackId);
    const clip = this.clips.get(ref.trackId)?.find((c) => c.id === ref.clipId);
    if (!track || !clip) return 'Select an audio clip to use the AI tools.';
    if (track.kind === 'midi') return 'The AI tools work on audio clips, not MIDI.';
    return { trackId: ref.trackId, clipId: ref.clipId, assetId: clip.assetId };
  }

  private renderJobs(): void {
    if (this.destroyed) return;
    const target = this.jobTarget();
    this.jobsPanel.setAvailability(typeof target === 'string' ? target : null);
    const jobs = readJobs(this.doc);
    const names = new Map(this.tracks.map((t) => [t.id, t.name]));
    const sourceName = (job: JobView): string => {
      for (const [tid, clips] of this.clips) if (clips.some((c) => c.assetId === job.assetId)) return names.get(tid) ?? '';
      return '';
    };
    const key = JSON.stringify([jobs, this.canEdit(), [...names]]);
    if (key !== this.jobsKey) {
      this.jobsKey = key;
      this.jobsPanel.update(jobs, this.canEdit(), sourceName);
    }
    // presence: "separating…" while one of one's own jobs runs (uploads and the jam win)
    const mine = jobs.find((j) => j.createdBy === this.opts.user.id && (j.status === 'running' || j.status === 'queued'));
    const activity = this.uploading ? 'uploading' : (this.jamActivity ?? (mine ? jobActivity(mine.kind) : null));
    this.setActivity(activity);
  }

  private async startJob(kind: JobKind): Promise<void> {
    const target = this.jobTarget();
    if (typeof target === 'string') return;
    this.jobsPanel.showMessage(null);
    try {
      await startJob(this.api, kind, target.assetId, { clipId: target.clipId, trackId: target.trackId });
    } catch (err) {
      if (!this.destroyed) this.jobsPanel.showMessage(startErrorMessage(kind, err));
    }
  }

  private async cancelJob(jobId: string): Promise<void> {
    if (!this.canEdit()) return;
    const kind = readJobs(this.doc).find((j) => j.id === jobId)?.kind ?? 'master';
    try {
      await cancelJob(this.api, jobId);
    } catch (err) {
      if (!this.destroyed) this.jobsPanel.showMessage(startErrorMessage(kind, err));
      this.jobsKey = '';
      this.renderJobs();
    }
  }

  // ---------------------------------------------------------------- upload, listen, export

  private async upload(file: File): Promise<void> {
    if (!this.canEdit()) return;
    this.uploadMsg.hidden = true;
    this.uploadMsg.textContent = '';
    this.progressEl.hidden = false;
    this.progressEl.value = 0;
    this.uploadEl.classList.add('busy');
    this.uploading = true;
    this.setActivity('uploading');
    try {
      const asset = await uploadAsset(this.opts.sessionId, this.opts.token, file, (f) => {
        this.progressEl.value = f;
      });
      this.progressEl.value = 1;
      if (this.destroyed) return;
      this.edit(() => addTrackWithClip(this.doc, { ...asset, name: file.name }, { track: newId(), clip: newId() }));
    } catch (err) {
      this.uploadMsg.textContent = `Could not add “${file.name}”: ${errorMessage(err)}`;
      this.uploadMsg.hidden = false;
    } finally {
      this.uploadEl.classList.remove('busy');
      this.progressEl.hidden = true;
      this.uploading = false;
      this.renderJobs();
    }
  }

  private toggleListen(): void {
    const b = this.bar;
    if (b.listen.getAttribute('aria-pressed') === 'true') {
      this.stopListening();
      return;
    }
    b.listen.setAttribute('aria-pressed', 'true');
    b.listen.classList.add('active');
    // the preview is the same timeline a second later: playing both would echo
    this.localBeforeListen = this.playback.on;
    this.playback.setEnabled(false);
    b.audio.src = `/api/sessions/${encodeURIComponent(this.opts.sessionId)}/preview.ogg?token=${encodeURIComponent(this.opts.token)}`;
    b.audio.play().catch((err: unknown) => {
      if (err instanceof DOMException && err.name === 'AbortError') return;
      this.stopListening();
      this.uploadMsg.textContent = `Cannot play the preview: ${errorMessage(err)}`;
      this.uploadMsg.hidden = false;
    });
  }

  private stopListening(): void {
    const b = this.bar;
    if (this.localBeforeListen) this.playback.setEnabled(true);
    this.localBeforeListen = false;
    b.listen.setAttribute('aria-pressed', 'false');
    b.listen.classList.remove('active');
    b.audio.pause();
    if (b.audio.hasAttribute('src')) {
      b.audio.removeAttribute('src');
      b.audio.load();
    }
  }
}
