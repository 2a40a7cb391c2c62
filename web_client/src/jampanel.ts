// The jam panel of the session view: join/leave the session's live jam with the microphone,
// a personal mix (each player's level and pan), self-monitoring, the jitter-buffer mode,
// live figures (round trip, server-added latency, buffer depth, losses, codec and bit rates),
// an "uncompressed (PCM16)" switch, and the shared
// "Record" switch (`session.transport.recording`, which the server records the jam on).

import type * as Y from 'yjs';

import { h } from './dom';
import { JamClient, type JamLink, type JamState } from './jamclient';
import { CODEC_PREF_KEY, codecPreference, type CodecPreference } from './jamcodec';
import { fmtMs, jamUrl, playerLabel, JITTER_MODES, type JamFigures, type JamParticipant, type JitterMode } from './jamcontrol';
import type { FifoStats } from './jamdsp';
import { readRecording, readTransport, toggleRecording } from './transport';

export interface JamPanelOptions {
  sessionId: string;
  token: string;
  name: string;
  doc: Y.Doc;
  canEdit(): boolean;
  /** Presence activity while in the jam ("jamming", "recording"), null when out. */
  activity(a: string | null): void;
}

interface PlayerRow {
  li: HTMLLIElement;
  gain: HTMLInputElement;
  pan: HTMLInputElement;
  label: HTMLSpanElement;
}

export class JamPanel {
  readonly root: HTMLElement;
  private client: JamClient | null = null;
  private readonly joinBtn: HTMLButtonElement;
  private readonly leaveBtn: HTMLButtonElement;
  private readonly recordBtn: HTMLButtonElement;
  private readonly recordState: HTMLSpanElement;
  private readonly statusEl: HTMLSpanElement;
  private readonly body: HTMLDivElement;
  private readonly monitor: HTMLInputElement;
  private readonly pcm16: HTMLInputElement;
  private readonly mode: HTMLSelectElement;
  private readonly depth: HTMLInputElement;
  private readonly players: HTMLUListElement;
  private readonly rows = new Map<string, PlayerRow>();
  private readonly fig: Record<string, HTMLElement> = {};
  private selfId = '';

  constructor(private readonly opts: JamPanelOptions) {
    this.joinBtn = h('button', { type: 'button', testid: 'jam-join', class: 'primary' }, 'Join the jam');
    this.leaveBtn = h('button', { type: 'button', testid: 'jam-leave', hidden: true }, 'Leave');
    this.recordBtn = h('button', { type: 'button', testid: 'jam-record', 'aria-pressed': 'false', title: 'Record the jam into the session (starts the transport)' }, '● Record');
    this.recordState = h('span', { class: 'muted', testid: 'jam-record-state' });
    this.statusEl = h('span', { class: 'muted', testid: 'jam-status', role: 'status' }, 'Not in the jam');
    this.monitor = h('input', { type: 'checkbox', testid: 'jam-monitor', checked: true });
    this.pcm16 = h('input', { type: 'checkbox', testid: 'jam-pcm16', checked: this.preference() === 'pcm16' });
    this.mode = h('select', { testid: 'jam-jitter-mode', 'aria-label': 'Jitter buffer mode' });
    for (const m of JITTER_MODES) this.mode.append(h('option', { value: m }, m === 'auto' ? 'Auto' : m === 'safe' ? 'Safe' : 'Manual'));
    this.depth = h('input', { type: 'number', min: 1, max: 20, value: 2, testid: 'jam-jitter-depth', 'aria-label': 'Buffer depth (blocks)', class: 'num' });
    this.players = h('ul', { class: 'jam-players', testid: 'jam-players' });

    const figure = (key: string, label: string): HTMLElement => {
      const v = h('span', { class: 'fig-value', testid: `jam-${key}` }, '—');
      this.fig[key] = v;
      return h('span', { class: 'fig' }, h('span', { class: 'muted' }, `${label} `), v);
    };
    const figures = h(
      'div',
      { class: 'jam-figures', testid: 'jam-figures' },
      figure('rtt', 'Round trip'),
      figure('server-latency', 'Server adds'),
      figure('buffer', 'Server buffer'),
      figure('local-buffer', 'Your buffer'),
      figure('losses', 'Lost/late'),
      figure('concealed', 'Concealed'),
      figure('dropped', 'Dropped to you'),
      figure('codec', 'Codec'),
      figure('rate-out', 'Sending'),
      figure('rate-in', 'Receiving'),
    );
    this.body = h(
      'div',
      { class: 'jam-body', hidden: true },
      h(
        'div',
        { class: 'jam-controls' },
        h('label', {}, this.monitor, ' Hear myself through the server'),
        h('label', {}, 'Jitter buffer ', this.mode),
        h('label', {}, 'depth ', this.depth, ' blocks'),
        h('label', { title: 'Send and receive uncompressed audio (768 kbit/s each way) instead of Opus' }, this.pcm16, ' Uncompressed (PCM16)'),
      ),
      figures,
      this.players,
    );
    this.root = h(
      'section',
      { class: 'jam-panel', testid: 'jam-panel', 'aria-label': 'Live jam' },
      h('div', { class: 'jam-head' }, h('strong', {}, 'Live jam'), this.joinBtn, this.leaveBtn, this.statusEl, h('span', { class: 'spacer' }), this.recordBtn, this.recordState),
      this.body,
    );

    this.joinBtn.addEventListener('click', () => void this.join());
    this.leaveBtn.addEventListener('click', () => this.leave());
    this.recordBtn.addEventListener('click', () => {
      if (this.opts.canEdit()) toggleRecording(this.opts.doc);
    });
    this.monitor.addEventListener('change', () => this.client?.setMonitor(this.monitor.checked));
    this.pcm16.addEventListener('change', () => {
      const pref: CodecPreference = this.pcm16.checked ? 'pcm16' : 'auto';
      try {
        window.localStorage.setItem(CODEC_PREF_KEY, pref);
      } catch {
        // storage refused (private mode): the choice holds for this page only
      }
      this.client?.setPreference(pref);
    });
    const jitter = (): void => {
      const d = Math.min(20, Math.max(1, Math.round(Number(this.depth.value) || 2)));
      this.depth.value = String(d);
      this.client?.setJitter(this.mode.value as JitterMode, d);
      this.depth.disabled = this.mode.value === 'auto';
    };
    this.mode.addEventListener('change', jitter);
    this.depth.addEventListener('change', jitter);
    this.depth.disabled = true;
    window.addEventListener('pagehide', this.onPageHide);
  }

  private readonly onPageHide = (): void => this.leave();

  /** `?jamCodec=pcm16` in the URL, else the stored choice, else `auto` (Opus when possible). */
  private preference(): CodecPreference {
    let stored: string | null = null;
    try {
      stored = window.localStorage.getItem(CODEC_PREF_KEY);
    } catch {
      stored = null;
    }
    return codecPreference(window.location.search, window.location.hash, stored);
  }

  /** Follow the document (the record switch). */
  render(): void {
    const rec = readRecording(this.opts.doc);
    const playing = readTransport(this.opts.doc).playing;
    this.recordBtn.setAttribute('aria-pressed', String(rec));
    this.recordBtn.classList.toggle('active', rec);
    this.recordBtn.disabled = !this.opts.canEdit();
    this.recordState.textContent = rec ? (playing ? 'Recording' : 'Armed: press play to record') : '';
    this.recordState.dataset.state = rec ? (playing ? 'recording' : 'armed') : 'off';
    this.publishActivity();
  }

  private publishActivity(): void {
    const inJam = this.client?.state === 'joined';
    const rec = readRecording(this.opts.doc) && readTransport(this.opts.doc).playing;
    this.opts.activity(inJam ? (rec ? 'recording' : 'jamming') : null);
  }

  async join(): Promise<void> {
    if (this.client) return;
    const url = jamUrl(window.location, this.opts.sessionId, this.opts.token);
    const pref = this.preference();
    this.pcm16.checked = pref === 'pcm16';
    const client = new JamClient(url, this.opts.name, {
      state: (s, msg) => this.onState(client, s, msg),
      welcome: (w) => {
        this.selfId = w.participantId;
        this.monitor.checked = w.selfMonitor;
        this.mode.value = w.jitter.mode;
        this.depth.value = String(Math.max(1, Math.round(w.jitter.depth)));
        this.depth.disabled = w.jitter.mode === 'auto';
      },
      participants: (list) => this.renderPlayers(client, list),
      figures: (f, local, link) => this.renderFigures(f, local, link, client.welcome?.block ?? 120),
    }, pref);
    this.client = client;
    await client.join();
  }

  leave(): void {
    const c = this.client;
    if (!c) return;
    this.client = null;
    c.leave();
    this.onState(null, 'idle', null);
  }

  destroy(): void {
    window.removeEventListener('pagehide', this.onPageHide);
    this.leave();
  }

  private onState(client: JamClient | null, s: JamState, msg: string | null): void {
    if (client && client !== this.client) return;
    if (s === 'closed') this.client = null;
    const inJam = s === 'joined' || s === 'starting';
    this.joinBtn.hidden = inJam;
    this.leaveBtn.hidden = !inJam;
    this.body.hidden = s !== 'joined';
    this.root.dataset.state = s;
    this.statusEl.textContent =
      msg ?? (s === 'starting' ? 'Connecting…' : s === 'joined' ? 'In the jam' : s === 'closed' ? 'Disconnected' : 'Not in the jam');
    this.statusEl.classList.toggle('error', s === 'closed' && msg !== null);
    if (s !== 'joined') {
      this.players.replaceChildren();
      this.rows.clear();
      for (const v of Object.values(this.fig)) {
        v.textContent = '—';
        v.dataset.value = '';
      }
    }
    this.publishActivity();
  }

  private renderPlayers(client: JamClient, list: JamParticipant[]): void {
    const keep = new Set(list.map((p) => p.id));
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.li.remove();
        this.rows.delete(id);
      }
    }
    for (const p of list) {
      let row = this.rows.get(p.id);
      if (!row) {
        const gain = h('input', { type: 'range', min: -60, max: 12, step: 0.5, value: 0, testid: 'jam-gain', 'aria-label': 'Level (dB)' });
        const pan = h('input', { type: 'range', min: -1, max: 1, step: 0.05, value: 0, testid: 'jam-pan', 'aria-label': 'Pan' });
        const label = h('span', { class: 'jam-player-name' });
        const value = h('span', { class: 'muted jam-gain-value' }, '0 dB');
        gain.addEventListener('input', () => {
          const db = Number(gain.value);
          value.textContent = `${db > 0 ? '+' : ''}${db} dB`;
          // the slider's bottom is silence
          client.setMix(p.id, db <= -60 ? -144 : db, null);
        });
        pan.addEventListener('input', () => client.setMix(p.id, null, Number(pan.value)));
        const li = h('li', { class: 'jam-player', testid: 'jam-participant', 'data-pid': p.id }, label, h('label', {}, 'Level ', gain), value, h('label', {}, 'Pan ', pan));
        row = { li, gain, pan, label };
        this.rows.set(p.id, row);
        this.players.append(li);
      }
      row.label.textContent = playerLabel(p, this.selfId) + (p.canSend ? '' : ' · listening');
    }
  }

  private renderFigures(f: JamFigures, local: FifoStats | null, link: JamLink, block: number): void {
    const blockMs = (block / 48000) * 1000;
    const set = (key: string, text: string, raw: number | null): void => {
      const el = this.fig[key];
      if (!el) return;
      if (el.textContent !== text) el.textContent = text;
      el.dataset.value = raw === null ? '' : String(raw);
    };
    set('rtt', fmtMs(f.rttMs), f.rttMs);
    set('server-latency', fmtMs(f.serverLatencyMs, 2), f.serverLatencyMs);
    set('buffer', f.upDepth === null ? '—' : `${f.upDepth} blocks (${(f.upDepth * blockMs).toFixed(1)} ms)`, f.upDepth);
    const lq = local ? local.queued / 48 : null;
    set('local-buffer', local ? `${lq!.toFixed(1)} ms (target ${local.target})` : '—', lq);
    set('losses', f.upLosses === null ? '—' : String(f.upLosses), f.upLosses);
    // here: the playout FIFO running dry, and mix frames that never came (played as silence)
    const here = (local?.underruns ?? 0) + link.mix.silenced;
    const conc = f.upConcealed === null && !local ? null : (f.upConcealed ?? 0) + here;
    set('concealed', conc === null ? '—' : `${f.upConcealed ?? 0} up · ${here} here`, conc);
    set('dropped', f.downDropped === null ? '—' : String(f.downDropped), f.downDropped);
    const codec = this.fig.codec;
    if (codec) {
      const text = (link.codec === 'opus' ? 'Opus' : 'PCM16') + (link.fallback ? ' (Opus failed)' : '');
      if (codec.textContent !== text) codec.textContent = text;
      codec.dataset.value = link.codec;
      codec.title = link.fallback ?? '';
      codec.dataset.decoded = String(link.mix.decoded);
      codec.dataset.silenced = String(link.mix.silenced);
      codec.dataset.late = String(link.mix.late);
    }
    const kbps = (v: number | null): string => (v === null ? '—' : `${v.toFixed(0)} kbit/s`);
    set('rate-out', kbps(link.kbpsOut), link.kbpsOut);
    set('rate-in', kbps(link.kbpsIn), link.kbpsIn);
  }
}
