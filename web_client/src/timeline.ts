// The arrange view: ruler (seek, loop range), track rows (header + lane), clips drawn from
// waveform peaks, the playhead, and other people's cursors. Editing gestures (move, trim,
// reorder, loop) preview locally while the pointer moves and are committed once, on release,
// through `TimelineActions` (one document transaction per gesture).
//
// Only clips inside the visible window (plus a margin) get DOM elements: a 32-track,
// 500-clip session keeps a few dozen. Scrolling reads the scroll position once per frame and
// re-lays the clips only when the view leaves the window already laid out.

import { clampRowShift, movedStart, playedLength, trimEnd, trimStart, type ClipGeom } from './clipmath';
import { beatSeconds, gridLines, waveColumns, type ClipView, type Peaks } from './daw';
import { h } from './dom';
import type { ClipMove, ClipRef } from './edits';
import { clipPeaks } from './peaks';
import type { Peer } from './presence';
import { pianoRoll } from './jobs';
import { dropIndex } from './reorder';
import { isTextEntry } from './shortcuts';
import type { Selection } from './selection';
import { snapEnabled, snapStep, snapTime } from './snap';
import { WaveImages } from './waveimages';
import { createTrackHead, markOthers, updateTrackHead, type TrackHeadActions } from './trackhead';
import type { TrackView } from './tracks';
import { normalizeRange, type Range } from './transport';
import { contains, inWindow, viewWindow, type ViewWindow } from './viewport';

export const HEAD_W = 300;
export const RULER_H = 28;
export const ROW_H = 96;
/**
 * Extra pixels laid out around the visible part (sideways, up/down), and how far the view may
 * move before clips are laid out again: small steps, so each scroll frame creates only a few
 * elements instead of a burst every few hundred pixels.
 */
const MARGIN_X = 480;
const MARGIN_Y = 2 * ROW_H;
const RELAYOUT_PX = 120;
/** Detached clip elements kept for reuse, and waveform images kept for reuse. */
const POOL_MAX = 256;
const WAVE_CACHE_MAX = 512;
/** A press that moves less than this is a click, not a drag. */
const DRAG_PX = 4;
const WAVE_H = 56;
const MAX_WAVE_W = 4096;

export interface TimelineModel {
  tracks: readonly TrackView[];
  clips: ReadonlyMap<string, readonly ClipView[]>;
  bpm: number;
  timeSignature: [number, number];
  loop: Range | null;
  seconds: number;
  editable: boolean;
  selection: Selection;
  othersClips: ReadonlyMap<string, Peer[]>;
  othersTracks: ReadonlyMap<string, Peer[]>;
}

export interface AssetPeaks {
  peaks: Peaks;
  seconds: number;
}

export interface TimelineActions extends TrackHeadActions {
  snapOn(): boolean;
  clickClip(ref: ClipRef, additive: boolean): void;
  clickLane(trackId: string): void;
  moveClips(moves: ClipMove[]): void;
  trimClip(ref: ClipRef, geom: ClipGeom): void;
  seek(seconds: number): void;
  setLoop(range: Range): void;
  reorder(trackId: string, toIndex: number): void;
  cursor(time: number | null, trackId: string | null): void;
  assetSeconds(assetId: string): number | null;
  peaks(assetId: string): Promise<AssetPeaks> | null;
  /** A waveform finished drawing (or failed to). */
  waveDrawn?(): void;
}

interface Row {
  li: HTMLLIElement;
  head: HTMLDivElement;
  lane: HTMLDivElement;
}

interface ClipEl {
  el: HTMLDivElement;
  wave: HTMLImageElement;
  /** Mini piano roll of a `midi` clip's notes (hidden on audio clips). */
  roll: HTMLCanvasElement;
  rollKey: string;
  name: HTMLSpanElement;
  trackId: string;
  clip: ClipView;
  left: number;
  width: number;
  drawKey: string;
}

interface MoveItem {
  ref: ClipRef;
  start: number;
  row: number;
}

type Gesture =
  | {
      kind: 'move';
      x0: number;
      y0: number;
      sx0: number;
      sy0: number;
      anchor: MoveItem;
      items: MoveItem[];
      moved: boolean;
      clickOnUp: ClipRef | null;
      delta: number;
      rowShift: number;
    }
  | { kind: 'trim'; edge: 'start' | 'end'; x0: number; sx0: number; ref: ClipRef; from: ClipGeom; assetSeconds: number | null; geom: ClipGeom; moved: boolean }
  | { kind: 'ruler'; x0: number; t0: number; t1: number; moved: boolean }
  | { kind: 'reorder'; trackId: string; from: number; to: number; y0: number; sy0: number };

/**
 * Gestures call preventDefault on pointerdown (no text selection, no native drag), which also
 * keeps focus where it was: leave a text field explicitly, so keyboard shortcuts apply to
 * what was just clicked.
 */
function leaveTextField(): void {
  const active = document.activeElement;
  if (active instanceof HTMLElement && isTextEntry(active)) active.blur();
}

/** Write a data attribute only when it changes (observers and style recalcs see real changes only). */
function setData(el: HTMLElement, key: string, value: string): void {
  if (el.dataset[key] !== value) el.dataset[key] = value;
}

function clipKey(trackId: string, clipId: string): string {
  return `${trackId}\u0000${clipId}`;
}

export class Timeline {
  readonly root: HTMLDivElement;
  readonly addBtn: HTMLButtonElement;
  private readonly content: HTMLDivElement;
  private readonly ruler: HTMLDivElement;
  private readonly marks: HTMLDivElement;
  private readonly loopRegion: HTMLDivElement;
  private readonly rulerHead: HTMLDivElement;
  private readonly list: HTMLUListElement;
  private readonly overlay: HTMLDivElement;
  private readonly playhead: HTMLDivElement;
  private readonly loopBand: HTMLDivElement;
  private readonly dropLine: HTMLDivElement;
  private readonly cursors = new Map<number, HTMLDivElement>();
  private readonly rows = new Map<string, Row>();
  private readonly clipEls = new Map<string, ClipEl>();
  private readonly pinned = new Set<string>();
  private model: TimelineModel | null = null;
  private pps = 40;
  private window: ViewWindow | null = null;
  private scrollX = 0;
  private scrollY = 0;
  private viewW = 1200;
  private viewH = 600;
  private scrollQueued = false;
  private gesture: Gesture | null = null;
  private playheadX = -1;
  private lastCursorAt = 0;
  private hoverAt: { x: number; y: number } | null = null;
  private hoverTimer = 0;
  private peers: readonly Peer[] = [];
  private readonly resize: ResizeObserver;
  private wavesPending = 0;
  private readonly pool: ClipEl[] = [];
  private readonly waves = new WaveImages(WAVE_CACHE_MAX);

  constructor(private readonly actions: TimelineActions) {
    this.addBtn = h('button', { testid: 'add-track', type: 'button', disabled: true }, 'Add track');
    this.marks = h('div', { class: 'marks' });
    this.loopRegion = h('div', { class: 'loop-region', testid: 'loop-region', hidden: true });
    this.ruler = h('div', { class: 'ruler lane-area', testid: 'ruler', title: 'Click: move the playhead. Drag: set the loop.' }, this.marks, this.loopRegion);
    this.rulerHead = h('div', { class: 'track-head ruler-head' }, h('span', { class: 'muted' }, 'Tracks'), this.addBtn);
    this.list = h('ul', { testid: 'tracks', class: 'tracks' });
    this.playhead = h('div', { class: 'playhead', testid: 'playhead' });
    this.loopBand = h('div', { class: 'loop-band', hidden: true });
    this.dropLine = h('div', { class: 'drop-line', testid: 'drop-line', hidden: true });
    this.overlay = h('div', { class: 'overlay' }, this.loopBand, this.playhead, this.dropLine);
    this.content = h(
      'div',
      { class: 'arrange-content' },
      h('div', { class: 'ruler-row' }, this.rulerHead, this.ruler),
      this.list,
      this.overlay,
    );
    this.root = h('div', { class: 'arrange', testid: 'arrange' }, this.content);
    this.root.style.setProperty('--head-width', `${HEAD_W}px`);
    this.root.style.setProperty('--row-h', `${ROW_H}px`);
    this.root.style.setProperty('--ruler-h', `${RULER_H}px`);

    this.root.addEventListener('scroll', this.onScroll, { passive: true });
    this.root.addEventListener('pointermove', this.onHover, { passive: true });
    this.root.addEventListener('pointerleave', () => {
      this.hoverAt = null;
      this.actions.cursor(null, null);
    });
    this.list.addEventListener('pointerdown', this.onListDown);
    this.ruler.addEventListener('pointerdown', this.onRulerDown);
    this.resize = new ResizeObserver((entries) => {
      for (const e of entries) {
        this.viewW = e.contentRect.width;
        this.viewH = e.contentRect.height;
      }
      this.layoutClips(false);
    });
    this.resize.observe(this.root);
  }

  destroy(): void {
    this.resize.disconnect();
    this.waves.destroy();
    window.clearTimeout(this.hoverTimer);
    this.endGesture();
  }

  get pxPerSecond(): number {
    return this.pps;
  }

  /** Zoom keeping the time at the left edge of the view where it is. */
  setZoom(pps: number): void {
    if (pps === this.pps) return;
    const leftTime = this.scrollX / this.pps;
    this.pps = pps;
    if (this.model) this.update(this.model);
    this.root.scrollLeft = leftTime * pps;
    this.scrollX = this.root.scrollLeft;
    this.layoutClips(true);
  }

  update(model: TimelineModel): void {
    this.model = model;
    const pps = this.pps;
    const laneW = Math.round(model.seconds * pps);
    const beatPx = beatSeconds(model.bpm, model.timeSignature[1]) * pps;
    const rowsH = model.tracks.length * ROW_H;
    this.root.style.setProperty('--lane-width', `${laneW}px`);
    this.root.style.setProperty('--beat-px', `${beatPx}px`);
    this.root.style.setProperty('--bar-px', `${beatPx * model.timeSignature[0]}px`);
    this.root.classList.toggle('dense', beatPx < 8);
    this.root.classList.toggle('editable', model.editable);
    this.overlay.style.width = `${laneW}px`;
    this.overlay.style.height = `${rowsH}px`;
    this.addBtn.disabled = !model.editable;
    this.renderMarks(model, laneW, beatPx);
    this.renderRows(model);
    this.renderLoop(model.loop);
    let clipCount = 0;
    for (const list of model.clips.values()) clipCount += list.length;
    setData(this.root, 'clipCount', String(clipCount));
    this.layoutClips(true);
    this.applyPreview();
    this.renderCursors();
  }

  /** Where the shared playhead is (seconds); cheap when it did not move a pixel. */
  setPlayhead(seconds: number): void {
    const x = Math.round(seconds * this.pps * 2) / 2;
    if (x === this.playheadX) return;
    this.playheadX = x;
    this.playhead.style.transform = `translateX(${x}px)`;
  }

  setPeers(peers: readonly Peer[]): void {
    this.peers = peers;
    this.renderCursors();
  }

  /** Escape: drop the gesture in progress without committing. True if there was one. */
  cancelGesture(): boolean {
    if (!this.gesture) return false;
    this.endGesture();
    if (this.model) this.update(this.model);
    return true;
  }

  /** The row (track) element of a track, for focusing its name after adding it. */
  rowOf(trackId: string): HTMLLIElement | null {
    return this.rows.get(trackId)?.li ?? null;
  }

  /** Scroll so a time is in view (used after seeking from the keyboard). */
  reveal(seconds: number): void {
    const x = seconds * this.pps;
    const laneView = Math.max(0, this.viewW - HEAD_W);
    if (x < this.scrollX || x > this.scrollX + laneView - 40) {
      this.root.scrollLeft = Math.max(0, x - laneView / 3);
    }
  }

  // ---------------------------------------------------------------- rendering

  private renderMarks(model: TimelineModel, laneW: number, beatPx: number): void {
    const key = `${this.pps}|${model.bpm}|${model.timeSignature.join('/')}|${laneW}`;
    if (this.marks.dataset.key === key) return;
    this.marks.dataset.key = key;
    const labelEvery = Math.max(1, Math.ceil(36 / Math.max(1, beatPx * model.timeSignature[0])));
    const out: HTMLElement[] = [];
    for (const l of gridLines(model.bpm, model.timeSignature, model.seconds, this.pps, 8)) {
      if (!l.isBar || (l.bar - 1) % labelEvery !== 0) continue;
      const m = h('span', { class: 'bar-mark' }, String(l.bar));
      m.style.left = `${l.x}px`;
      out.push(m);
    }
    this.marks.replaceChildren(...out);
  }

  private renderRows(model: TimelineModel): void {
    const keep = new Set(model.tracks.map((t) => t.id));
    for (const [id, row] of this.rows) {
      if (keep.has(id)) continue;
      row.li.remove();
      this.rows.delete(id);
    }
    let prev: Element | null = null;
    model.tracks.forEach((track, index) => {
      let row = this.rows.get(track.id);
      if (!row) {
        const head = createTrackHead(track.id, this.actions);
        const lane = h('div', { class: 'lane lane-area', testid: 'lane', 'data-track-id': track.id });
        const li = h('li', { class: 'track', testid: 'track', 'data-track-id': track.id }, head, lane);
        row = { li, head, lane };
        this.rows.set(track.id, row);
      }
      row.li.style.setProperty('--track-color', track.color);
      row.li.dataset.index = String(index);
      // tracks a job made together (stems) are drawn as one bracketed group
      const group = track.group ?? '';
      const prevGroup = model.tracks[index - 1]?.group ?? '';
      const nextGroup = model.tracks[index + 1]?.group ?? '';
      if ((row.li.dataset.group ?? '') !== group) {
        if (group) row.li.dataset.group = group;
        else delete row.li.dataset.group;
      }
      // a job that made one track (mastering, MIDI) needs no bracket
      const grouped = group !== '' && (prevGroup === group || nextGroup === group);
      row.li.classList.toggle('grouped', grouped);
      row.li.classList.toggle('group-first', grouped && prevGroup !== group);
      row.li.classList.toggle('group-last', grouped && nextGroup !== group);
      row.li.dataset.kind = track.kind;
      updateTrackHead(row.head, track, model.editable, model.selection.track === track.id && model.selection.size === 0, model.othersTracks.get(track.id));
      const expected: Element | null = prev ? prev.nextElementSibling : this.list.firstElementChild;
      if (expected !== row.li) {
        if (prev) prev.after(row.li);
        else this.list.prepend(row.li);
      }
      prev = row.li;
    });
  }

  private renderLoop(loop: Range | null): void {
    const g = this.gesture;
    const shown = g?.kind === 'ruler' && g.moved ? normalizeRange(g.t0, g.t1) : loop;
    for (const el of [this.loopRegion, this.loopBand]) {
      el.hidden = shown === null;
      if (!shown) continue;
      el.style.left = `${shown[0] * this.pps}px`;
      el.style.width = `${(shown[1] - shown[0]) * this.pps}px`;
    }
    this.loopRegion.classList.toggle('pending', g?.kind === 'ruler');
    setData(this.loopRegion, 'start', shown ? String(shown[0]) : '');
    setData(this.loopRegion, 'end', shown ? String(shown[1]) : '');
  }

  private readonly onScroll = (): void => {
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      // read first (nothing is dirty at the start of a frame), then write
      this.scrollX = this.root.scrollLeft;
      this.scrollY = this.root.scrollTop;
      this.layoutClips(false);
    });
  };

  /** Create, place and drop clip elements for the visible window (see the module comment). */
  private layoutClips(force: boolean): void {
    const model = this.model;
    if (!model) return;
    const box = { scrollLeft: this.scrollX, scrollTop: this.scrollY, width: this.viewW, height: this.viewH };
    const need = viewWindow(box, HEAD_W, RULER_H, ROW_H, MARGIN_X - RELAYOUT_PX, Math.max(0, MARGIN_Y - RELAYOUT_PX));
    if (!force && this.window && contains(this.window, need)) return;
    const win = viewWindow(box, HEAD_W, RULER_H, ROW_H, MARGIN_X, MARGIN_Y);
    this.window = win;
    const pps = this.pps;
    const seen = new Set<string>();
    for (let r = win.row0; r <= Math.min(win.row1, model.tracks.length - 1); r += 1) {
      const track = model.tracks[r];
      const row = track ? this.rows.get(track.id) : undefined;
      if (!track || !row) continue;
      for (const clip of model.clips.get(track.id) ?? []) {
        const len = playedLength(clip, this.actions.assetSeconds(clip.assetId));
        const left = clip.start * pps;
        const width = Math.max(4, Math.round(len * pps));
        if (!inWindow(win, r, left, left + width)) continue;
        const key = clipKey(track.id, clip.id);
        seen.add(key);
        this.placeClip(key, row, track, clip, left, width, model);
      }
    }
    for (const [key, ce] of this.clipEls) {
      if (seen.has(key) || this.pinned.has(key)) continue;
      ce.el.remove();
      this.clipEls.delete(key);
      if (this.pool.length < POOL_MAX) this.pool.push(ce);
    }
    setData(this.root, 'renderedClips', String(this.clipEls.size));
  }

  private newClipEl(): ClipEl {
    const name = h('span', { class: 'clip-name' });
    const wave = h('img', { testid: 'clip-waveform', class: 'wave', alt: '', draggable: 'false', 'data-drawn': 'false' });
    wave.addEventListener('load', () => {
      wave.dataset.drawn = 'true';
      this.actions.waveDrawn?.();
    });
    const roll = h('canvas', { testid: 'clip-notes', class: 'roll', hidden: true });
    const el = h(
      'div',
      { class: 'clip', testid: 'clip' },
      name,
      wave,
      roll,
      h('div', { class: 'clip-handle start', testid: 'clip-trim-start', title: 'Drag to trim the start' }),
      h('div', { class: 'clip-handle end', testid: 'clip-trim-end', title: 'Drag to trim the end' }),
    );
    return { el, wave, roll, rollKey: '', name, trackId: '', clip: { id: '', assetId: '', start: 0, offset: 0, length: 0 }, left: -1, width: -1, drawKey: '' };
  }

  private placeClip(key: string, row: Row, track: TrackView, clip: ClipView, left: number, width: number, model: TimelineModel): void {
    let ce = this.clipEls.get(key);
    if (!ce) {
      // a recycled element keeps its picture, often the right one already (clips repeat)
      ce = this.pool.pop() ?? this.newClipEl();
      ce.trackId = track.id;
      setData(ce.el, 'clipId', clip.id);
      setData(ce.el, 'trackId', track.id);
      ce.el.style.transform = '';
      ce.el.classList.remove('dragging');
      this.clipEls.set(key, ce);
    }
    ce.clip = clip;
    if (ce.el.parentElement !== row.lane) row.lane.append(ce.el);
    if (ce.left !== left) {
      ce.left = left;
      ce.el.style.left = `${left}px`;
    }
    if (ce.width !== width) {
      ce.width = width;
      ce.el.style.width = `${width}px`;
    }
    setData(ce.el, 'start', String(clip.start));
    setData(ce.el, 'offset', String(clip.offset));
    setData(ce.el, 'length', String(clip.length));
    if (ce.name.textContent !== track.name) ce.name.textContent = track.name;
    const selected = model.selection.hasClip(clip.id);
    if (ce.el.classList.contains('selected') !== selected) {
      ce.el.classList.toggle('selected', selected);
      ce.el.setAttribute('aria-selected', String(selected));
    } else if (!ce.el.hasAttribute('aria-selected')) {
      ce.el.setAttribute('aria-selected', String(selected));
    }
    markOthers(ce.el, model.othersClips.get(clip.id));
    if (track.kind === 'midi') {
      ce.wave.hidden = true;
      this.drawNotes(ce, track.color, width);
    } else {
      ce.wave.hidden = false;
      if (!ce.roll.hidden) {
        ce.roll.hidden = true;
        ce.rollKey = '';
      }
      this.drawWave(ce, track.color, width);
    }
  }

  /** A midi clip's notes as a mini piano roll (pitch range fitted to the notes shown). */
  private drawNotes(ce: ClipEl, color: string, width: number): void {
    const clip = ce.clip;
    const notes = clip.notes ?? [];
    const len = clip.length > 0 ? clip.length : notes.reduce((m, n) => Math.max(m, n.start + n.duration), 0) - clip.offset;
    const cw = Math.max(1, Math.min(width, MAX_WAVE_W));
    const key = `${notes.length}|${notes[0]?.start ?? ''}|${notes[notes.length - 1]?.pitch ?? ''}|${clip.offset}|${len}|${cw}|${color}`;
    ce.roll.hidden = false;
    ce.roll.dataset.notes = String(notes.length);
    if (ce.rollKey === key) return;
    ce.rollKey = key;
    ce.roll.width = cw;
    ce.roll.height = WAVE_H;
    const ctx = ce.roll.getContext('2d');
    if (!ctx) return;
    ctx.clearRect(0, 0, cw, WAVE_H);
    ctx.fillStyle = color;
    let drawn = 0;
    for (const r of pianoRoll(notes, clip.offset, len, cw, WAVE_H)) {
      ctx.fillRect(r.x, r.y, r.w, r.h);
      drawn += 1;
    }
    ce.roll.dataset.drawn = String(drawn);
  }

  /** Show the clip's slice of its asset's waveform (a shared picture, see waveimages.ts). */
  private drawWave(ce: ClipEl, color: string, width: number): void {
    const clip = ce.clip;
    const seconds = this.actions.assetSeconds(clip.assetId);
    const cw = Math.max(1, Math.min(width, MAX_WAVE_W));
    const len = playedLength(clip, seconds);
    const key = `${clip.assetId}|${clip.offset}|${len}|${cw}|${color}|${seconds ?? '?'}`;
    if (ce.drawKey === key) return;
    ce.drawKey = key;
    const show = (url: string): void => {
      if (ce.drawKey !== key) return;
      if (ce.wave.getAttribute('src') === url) {
        ce.wave.dataset.drawn = String(ce.wave.complete && ce.wave.naturalWidth > 0);
        return;
      }
      ce.wave.dataset.drawn = 'false';
      ce.wave.src = url; // data-drawn turns true on load
    };
    const ready = this.waves.get(key);
    if (ready) {
      show(ready);
      return;
    }
    ce.wave.dataset.drawn = 'false';
    ce.wave.removeAttribute('src');
    const pending = this.actions.peaks(clip.assetId);
    if (!pending) return;
    this.wavesPending += 1;
    setData(this.root, 'wavesPending', String(this.wavesPending));
    void pending
      .then(({ peaks, seconds: assetSeconds }) =>
        this.waves.render(key, cw, WAVE_H, (ctx) => {
          ctx.fillStyle = color;
          ctx.globalAlpha = 0.9;
          for (const col of waveColumns(clipPeaks(peaks, assetSeconds, clip.offset, len, cw), cw, WAVE_H)) ctx.fillRect(col.x, col.y, 1, col.h);
        }),
      )
      .then(show)
      .catch(() => {
        // no peaks (asset gone or unreachable): the clip stays a plain box
      })
      .finally(() => {
        this.wavesPending -= 1;
        setData(this.root, 'wavesPending', String(this.wavesPending));
      });
  }

  private renderCursors(): void {
    const keep = new Set<number>();
    const model = this.model;
    for (const p of this.peers) {
      if (p.self || p.cursor === null) continue;
      keep.add(p.clientId);
      let el = this.cursors.get(p.clientId);
      if (!el) {
        el = h('div', { class: 'remote-cursor', testid: 'remote-cursor', 'data-client-id': p.clientId }, h('span', { class: 'cursor-label' }));
        this.overlay.append(el);
        this.cursors.set(p.clientId, el);
      }
      el.style.setProperty('--peer-color', p.color);
      el.style.transform = `translateX(${Math.round(p.cursor * this.pps)}px)`;
      el.dataset.name = p.name;
      el.dataset.time = String(p.cursor);
      const row = model && p.cursorTrack ? model.tracks.findIndex((t) => t.id === p.cursorTrack) : -1;
      const label = el.firstElementChild as HTMLElement;
      if (label.textContent !== p.name) label.textContent = p.name;
      label.style.top = `${Math.max(0, row) * ROW_H + 2}px`;
    }
    for (const [id, el] of this.cursors) {
      if (keep.has(id)) continue;
      el.remove();
      this.cursors.delete(id);
    }
  }

  // ---------------------------------------------------------------- gestures

  private step(e: { altKey: boolean; shiftKey: boolean }): number | null {
    const m = this.model;
    if (!m || !snapEnabled(this.actions.snapOn(), e)) return null;
    return snapStep(m.bpm, m.timeSignature, this.pps);
  }

  private rowIndex(trackId: string): number {
    return this.model ? this.model.tracks.findIndex((t) => t.id === trackId) : -1;
  }

  private clipView(ref: ClipRef): ClipView | null {
    return this.model?.clips.get(ref.trackId)?.find((c) => c.id === ref.clipId) ?? null;
  }

  private readonly onListDown = (e: PointerEvent): void => {
    if (e.button !== 0 || !this.model) return;
    const target = e.target as HTMLElement;
    if (target.closest('.clip, .lane, [data-testid="track-grip"]')) leaveTextField();
    const editable = this.model.editable;
    const grip = target.closest<HTMLElement>('[data-testid="track-grip"]');
    if (grip) {
      const li = grip.closest<HTMLLIElement>('li.track');
      const id = li?.dataset.trackId;
      if (!editable || !id) return;
      e.preventDefault();
      const from = this.rowIndex(id);
      this.beginGesture({ kind: 'reorder', trackId: id, from, to: from, y0: e.clientY, sy0: this.root.scrollTop });
      li?.classList.add('dragging');
      return;
    }
    const clipEl = target.closest<HTMLDivElement>('.clip');
    if (clipEl) {
      const ref = { trackId: clipEl.dataset.trackId ?? '', clipId: clipEl.dataset.clipId ?? '' };
      const clip = this.clipView(ref);
      if (!clip) return;
      e.preventDefault();
      const additive = e.shiftKey || e.ctrlKey || e.metaKey;
      const wasSelected = this.model.selection.hasClip(ref.clipId);
      if (additive || !wasSelected) this.actions.clickClip(ref, additive);
      if (!editable) return;
      const handle = target.closest<HTMLElement>('.clip-handle');
      if (handle) {
        const assetSeconds = this.actions.assetSeconds(clip.assetId);
        const from = { start: clip.start, offset: clip.offset, length: clip.length };
        this.pin([ref]);
        this.beginGesture({
          kind: 'trim',
          edge: handle.classList.contains('start') ? 'start' : 'end',
          x0: e.clientX,
          sx0: this.root.scrollLeft,
          ref,
          from,
          assetSeconds,
          geom: from,
          moved: false,
        });
        return;
      }
      if (additive && wasSelected) return; // toggled off: nothing to drag
      const items: MoveItem[] = [];
      for (const r of this.model.selection.refs()) {
        const c = this.clipView(r);
        const row = this.rowIndex(r.trackId);
        if (c && row >= 0) items.push({ ref: r, start: c.start, row });
      }
      const anchor = items.find((it) => it.ref.clipId === ref.clipId);
      if (!anchor) return;
      this.pin(items.map((it) => it.ref));
      this.beginGesture({
        kind: 'move',
        x0: e.clientX,
        y0: e.clientY,
        sx0: this.root.scrollLeft,
        sy0: this.root.scrollTop,
        anchor,
        items,
        moved: false,
        clickOnUp: !additive && wasSelected && items.length > 1 ? ref : null,
        delta: 0,
        rowShift: 0,
      });
      return;
    }
    const lane = target.closest<HTMLElement>('.lane');
    if (lane?.dataset.trackId) this.actions.clickLane(lane.dataset.trackId);
  };

  private readonly onRulerDown = (e: PointerEvent): void => {
    if (e.button !== 0 || !this.model?.editable) return;
    e.preventDefault();
    leaveTextField();
    const x = e.clientX - this.ruler.getBoundingClientRect().left;
    const t = Math.max(0, x / this.pps);
    this.beginGesture({ kind: 'ruler', x0: e.clientX, t0: t, t1: t, moved: false });
  };

  private beginGesture(g: Gesture): void {
    this.gesture = g;
    this.root.classList.add('gesturing');
    window.addEventListener('pointermove', this.onMove);
    window.addEventListener('pointerup', this.onUp);
    window.addEventListener('pointercancel', this.onCancel);
  }

  private endGesture(): void {
    this.gesture = null;
    this.root.classList.remove('gesturing');
    window.removeEventListener('pointermove', this.onMove);
    window.removeEventListener('pointerup', this.onUp);
    window.removeEventListener('pointercancel', this.onCancel);
    for (const key of this.pinned) {
      const ce = this.clipEls.get(key);
      if (ce) {
        ce.el.style.transform = '';
        ce.el.classList.remove('dragging');
      }
    }
    this.pinned.clear();
    this.dropLine.hidden = true;
    for (const row of this.rows.values()) row.li.classList.remove('dragging');
  }

  private pin(refs: readonly ClipRef[]): void {
    for (const r of refs) this.pinned.add(clipKey(r.trackId, r.clipId));
  }

  private readonly onCancel = (): void => {
    this.cancelGesture();
  };

  private readonly onMove = (e: PointerEvent): void => {
    const g = this.gesture;
    const m = this.model;
    if (!g || !m) return;
    const step = this.step(e);
    switch (g.kind) {
      case 'move': {
        const dx = e.clientX - g.x0 + (this.root.scrollLeft - g.sx0);
        const dy = e.clientY - g.y0 + (this.root.scrollTop - g.sy0);
        if (!g.moved && Math.hypot(dx, dy) < DRAG_PX) return;
        g.moved = true;
        // a drag straight up or down changes the track only, never the time
        let delta = Math.abs(dx) < DRAG_PX ? 0 : movedStart(g.anchor.start, dx / this.pps, step) - g.anchor.start;
        const earliest = Math.min(...g.items.map((it) => it.start));
        delta = Math.max(delta, -earliest); // no clip before 0
        g.delta = delta;
        g.rowShift = clampRowShift(dy / ROW_H, g.items.map((it) => it.row), m.tracks.length);
        break;
      }
      case 'trim': {
        const dt = (e.clientX - g.x0 + (this.root.scrollLeft - g.sx0)) / this.pps;
        if (!g.moved && Math.abs(dt * this.pps) < 1) return;
        g.moved = true;
        const len = playedLength(g.from, g.assetSeconds);
        g.geom =
          g.edge === 'start'
            ? trimStart(g.from, g.from.start + dt, step, g.assetSeconds)
            : trimEnd(g.from, g.from.start + len + dt, step, g.assetSeconds);
        break;
      }
      case 'ruler': {
        if (!g.moved && Math.abs(e.clientX - g.x0) < DRAG_PX) return;
        g.moved = true;
        const x = e.clientX - this.ruler.getBoundingClientRect().left;
        g.t1 = Math.max(0, x / this.pps);
        this.renderLoop(null);
        return;
      }
      case 'reorder': {
        const y = e.clientY - g.y0 + (this.root.scrollTop - g.sy0) + (g.from + 0.5) * ROW_H;
        g.to = dropIndex(y, 0, ROW_H, m.tracks.length);
        break;
      }
    }
    this.applyPreview();
  };

  /** Show the gesture in progress (and re-show it after a re-render during the gesture). */
  private applyPreview(): void {
    const g = this.gesture;
    if (!g) return;
    if (g.kind === 'move' && g.moved) {
      for (const it of g.items) {
        const ce = this.clipEls.get(clipKey(it.ref.trackId, it.ref.clipId));
        if (!ce) continue;
        const x = Math.max(0, it.start + g.delta) * this.pps - ce.left;
        ce.el.style.transform = `translate(${x}px, ${g.rowShift * ROW_H}px)`;
        ce.el.classList.add('dragging');
      }
    } else if (g.kind === 'trim' && g.moved) {
      const ce = this.clipEls.get(clipKey(g.ref.trackId, g.ref.clipId));
      if (!ce) return;
      const len = playedLength(g.geom, g.assetSeconds);
      ce.el.style.transform = `translateX(${g.geom.start * this.pps - ce.left}px)`;
      ce.el.style.width = `${Math.max(4, Math.round(len * this.pps))}px`;
      ce.width = -1; // re-set from the document on the next layout
      ce.el.classList.add('dragging');
    } else if (g.kind === 'reorder') {
      const line = g.to > g.from ? g.to + 1 : g.to;
      this.dropLine.hidden = g.to === g.from;
      this.dropLine.style.transform = `translateY(${line * ROW_H - 1}px)`;
    }
  }

  private readonly onUp = (e: PointerEvent): void => {
    const g = this.gesture;
    const m = this.model;
    this.endGesture();
    if (!g || !m) return;
    switch (g.kind) {
      case 'move':
        if (g.moved && (g.delta !== 0 || g.rowShift !== 0)) {
          const moves: ClipMove[] = [];
          for (const it of g.items) {
            const to = m.tracks[it.row + g.rowShift];
            if (!to) continue;
            moves.push({ ...it.ref, toTrack: to.id, start: Math.max(0, snapTime(it.start + g.delta, null)) });
          }
          this.actions.moveClips(moves);
        } else if (!g.moved && g.clickOnUp) {
          this.actions.clickClip(g.clickOnUp, false);
        }
        break;
      case 'trim':
        if (g.moved && (g.geom.start !== g.from.start || g.geom.offset !== g.from.offset || g.geom.length !== g.from.length)) {
          this.actions.trimClip(g.ref, g.geom);
        }
        break;
      case 'ruler': {
        const step = this.step(e);
        if (g.moved) {
          const range = normalizeRange(snapTime(g.t0, step), snapTime(g.t1, step));
          if (range) this.actions.setLoop(range);
        } else {
          this.actions.seek(Math.max(0, snapTime(g.t0, step)));
        }
        break;
      }
      case 'reorder':
        if (g.to !== g.from) this.actions.reorder(g.trackId, g.to);
        break;
    }
    // drop the preview now (with the newest model: the edit above may have re-rendered already)
    if (this.model) this.update(this.model);
  };

  /** Pointer over the timeline → presence cursor, at most every 50 ms, the last position always sent. */
  private readonly onHover = (e: PointerEvent): void => {
    this.hoverAt = { x: e.clientX, y: e.clientY };
    if (this.hoverTimer) return;
    const wait = Math.max(0, 50 - (performance.now() - this.lastCursorAt));
    this.hoverTimer = window.setTimeout(() => {
      this.hoverTimer = 0;
      this.lastCursorAt = performance.now();
      if (this.hoverAt) this.sendCursor(this.hoverAt.x, this.hoverAt.y);
    }, wait);
  };

  private sendCursor(clientX: number, clientY: number): void {
    if (!this.model) return;
    const rect = this.root.getBoundingClientRect();
    // the content starts inside the border
    const left = rect.left + this.root.clientLeft;
    const x = clientX - left - HEAD_W + this.root.scrollLeft;
    const y = clientY - rect.top - this.root.clientTop - RULER_H + this.root.scrollTop;
    if (clientX - left < HEAD_W || x < 0) {
      this.actions.cursor(null, null);
      return;
    }
    const track = y >= 0 ? this.model.tracks[Math.floor(y / ROW_H)] : undefined;
    this.actions.cursor(x / this.pps, track?.id ?? null);
  }
}
