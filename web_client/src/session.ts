// An opened session: the Yjs document synced over `/sync/<id>`, its title, the
// live track list and who is present.

import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';

import type { User } from './api';
import { isTerminal, stateLabel, syncUrl, terminalState, type ConnState } from './connection';
import { h, setInputValue } from './dom';
import {
  addTrack,
  deleteTrack,
  docTitle,
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

  private readonly onDocChange = (): void => this.scheduleRender();
  private readonly onAwarenessChange = (): void => this.renderPresence();

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
    this.bodyEl = h(
      'div',
      { class: 'session-body' },
      h('div', { class: 'presence', testid: 'presence' }, h('span', { class: 'muted' }, 'Here now:'), this.presenceList),
      h('div', { class: 'toolbar' }, this.addBtn),
      this.trackList,
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

    const tracks = readTracks(this.doc);
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
    const del = h('button', { type: 'button', testid: 'delete-track', class: 'danger', title: 'Delete track' }, 'Delete');
    del.addEventListener('click', () => {
      if (this.canEdit()) deleteTrack(this.doc, id);
    });
    return h(
      'li',
      { class: 'track', testid: 'track', 'data-track-id': id },
      h('span', { class: 'swatch', 'aria-hidden': 'true' }),
      input,
      h('span', { class: 'kind badge' }),
      h('span', { class: 'mix muted' }),
      del,
    );
  }

  private updateRow(row: HTMLLIElement, track: TrackView, editable: boolean): void {
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
    const mix = row.querySelector<HTMLSpanElement>('.mix');
    if (mix) {
      const parts = [`${track.gainDb.toFixed(1)} dB`, `pan ${track.pan.toFixed(2)}`];
      if (track.mute) parts.push('muted');
      if (track.solo) parts.push('solo');
      parts.push(`${track.clipCount} clip${track.clipCount === 1 ? '' : 's'}`);
      mix.textContent = parts.join(' · ');
    }
    const del = row.querySelector<HTMLButtonElement>('button[data-testid="delete-track"]');
    if (del) del.disabled = !editable;
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
