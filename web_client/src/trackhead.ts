// One track's header: grip (drag to reorder), colour swatch, name (inline rename), kind,
// delete, and the mixer strip (mute, solo, fader in dB, pan, meter). Built once per track and
// updated in place from the document.

import { dbToFader, FADER_STEPS, faderToDb, formatDb, formatPan } from './daw';
import { h, setInputValue } from './dom';
import type { Peer } from './presence';
import { sanitizeTrackName, type TrackView } from './tracks';

export interface TrackHeadActions {
  canEdit(): boolean;
  rename(id: string, name: string): void;
  /** A continuous gesture (typing, fader drag) starts / ends: one undo step in between. */
  gestureStart(): void;
  gestureEnd(): void;
  remove(id: string): void;
  toggle(id: string, key: 'mute' | 'solo'): void;
  set(id: string, key: 'gainDb' | 'pan', value: number): void;
  pickColor(id: string, anchor: HTMLElement): void;
  select(id: string): void;
}

export function createTrackHead(id: string, a: TrackHeadActions): HTMLDivElement {
  const grip = h('button', { type: 'button', testid: 'track-grip', class: 'grip icon', title: 'Drag to reorder', 'aria-label': 'Reorder track' }, '⠿');
  const swatch = h('button', { type: 'button', testid: 'track-color', class: 'swatch-btn', title: 'Track colour', 'aria-label': 'Track colour' });
  swatch.addEventListener('click', () => {
    if (a.canEdit()) a.pickColor(id, swatch);
  });
  const input = h('input', {
    type: 'text',
    testid: 'track-name',
    class: 'track-name',
    'aria-label': 'Track name',
    maxlength: 200,
    spellcheck: 'false',
    autocomplete: 'off',
  });
  input.addEventListener('focus', () => a.gestureStart());
  input.addEventListener('blur', () => a.gestureEnd());
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === 'Escape') input.blur();
  });
  input.addEventListener('input', () => {
    if (!a.canEdit()) return;
    const clean = sanitizeTrackName(input.value);
    if (clean !== input.value) setInputValue(input, clean);
    a.rename(id, clean);
  });
  const del = h('button', { type: 'button', testid: 'delete-track', class: 'icon danger', title: 'Delete track (and its clips)' }, '✕');
  del.addEventListener('click', () => {
    if (a.canEdit()) a.remove(id);
  });
  const mute = h('button', { type: 'button', testid: 'track-mute', class: 'toggle mute', title: 'Mute (M)', 'aria-pressed': 'false' }, 'M');
  const solo = h('button', { type: 'button', testid: 'track-solo', class: 'toggle solo', title: 'Solo (S)', 'aria-pressed': 'false' }, 'S');
  mute.addEventListener('click', () => {
    if (a.canEdit()) a.toggle(id, 'mute');
  });
  solo.addEventListener('click', () => {
    if (a.canEdit()) a.toggle(id, 'solo');
  });
  const gain = h('input', { type: 'range', testid: 'track-gain', class: 'fader', min: 0, max: FADER_STEPS, step: 1, 'aria-label': 'Volume (dB)' });
  const gainVal = h('span', { class: 'val', testid: 'track-gain-value' });
  gain.addEventListener('pointerdown', () => a.gestureStart());
  gain.addEventListener('pointerup', () => a.gestureEnd());
  gain.addEventListener('change', () => a.gestureEnd());
  gain.addEventListener('input', () => {
    if (!a.canEdit()) return;
    const db = faderToDb(Number(gain.value) / FADER_STEPS);
    gainVal.textContent = formatDb(db);
    a.set(id, 'gainDb', db);
  });
  gain.addEventListener('dblclick', () => {
    if (a.canEdit()) a.set(id, 'gainDb', 0);
  });
  const pan = h('input', { type: 'range', testid: 'track-pan', class: 'pan', min: -100, max: 100, step: 1, 'aria-label': 'Pan' });
  const panVal = h('span', { class: 'val', testid: 'track-pan-value' });
  pan.addEventListener('pointerdown', () => a.gestureStart());
  pan.addEventListener('pointerup', () => a.gestureEnd());
  pan.addEventListener('change', () => a.gestureEnd());
  pan.addEventListener('input', () => {
    if (!a.canEdit()) return;
    const v = Number(pan.value) / 100;
    panVal.textContent = formatPan(v);
    a.set(id, 'pan', v);
  });
  pan.addEventListener('dblclick', () => {
    if (a.canEdit()) a.set(id, 'pan', 0);
  });
  const meter = h('div', { class: 'meter', testid: 'track-meter', 'data-level': '' }, h('div', { class: 'fill' }));
  const head = h(
    'div',
    { class: 'track-head', testid: 'track-head' },
    h('div', { class: 'head-row' }, grip, swatch, input, h('span', { class: 'kind badge' }), del),
    h('div', { class: 'head-row mixer' }, mute, solo, gain, gainVal),
    h('div', { class: 'head-row mixer' }, h('span', { class: 'muted small' }, 'Pan'), pan, panVal, meter),
  );
  // a click on the header's background selects the track (for M, S and Delete)
  head.addEventListener('pointerdown', (e) => {
    if (!(e.target as HTMLElement).closest('input, button, select')) a.select(id);
  });
  return head;
}

function q<T extends Element>(root: Element, testid: string): T | null {
  return root.querySelector<T>(`[data-testid="${testid}"]`);
}

export function updateTrackHead(
  head: HTMLDivElement,
  track: TrackView,
  editable: boolean,
  selected: boolean,
  others: readonly Peer[] | undefined,
): void {
  const swatch = q<HTMLButtonElement>(head, 'track-color');
  if (swatch) {
    swatch.style.background = track.color;
    swatch.dataset.color = track.color;
    swatch.disabled = !editable;
  }
  const grip = q<HTMLButtonElement>(head, 'track-grip');
  if (grip) grip.disabled = !editable;
  const input = q<HTMLInputElement>(head, 'track-name');
  if (input) {
    setInputValue(input, track.name);
    input.disabled = !editable;
    input.placeholder = 'Untitled track';
  }
  const kind = head.querySelector<HTMLSpanElement>('.kind');
  if (kind && kind.textContent !== track.kind) kind.textContent = track.kind;
  const gain = q<HTMLInputElement>(head, 'track-gain');
  if (gain) {
    const pos = String(Math.round(dbToFader(track.gainDb) * FADER_STEPS));
    if (faderToDb(Number(gain.value) / FADER_STEPS) !== track.gainDb || gain.value === '') gain.value = pos;
    gain.disabled = !editable;
    gain.dataset.db = String(track.gainDb);
  }
  const gainVal = q<HTMLSpanElement>(head, 'track-gain-value');
  if (gainVal) gainVal.textContent = formatDb(track.gainDb);
  const pan = q<HTMLInputElement>(head, 'track-pan');
  if (pan) {
    pan.value = String(Math.round(track.pan * 100));
    pan.disabled = !editable;
  }
  const panVal = q<HTMLSpanElement>(head, 'track-pan-value');
  if (panVal) panVal.textContent = formatPan(track.pan);
  for (const [sel, on] of [
    ['track-mute', track.mute],
    ['track-solo', track.solo],
  ] as const) {
    const b = q<HTMLButtonElement>(head, sel);
    if (!b) continue;
    b.setAttribute('aria-pressed', String(on));
    b.disabled = !editable;
  }
  const del = q<HTMLButtonElement>(head, 'delete-track');
  if (del) del.disabled = !editable;
  head.classList.toggle('selected', selected);
  head.setAttribute('aria-selected', String(selected));
  markOthers(head, others);
}

/** Outline an element in the colour of the (first) other person who selected it. */
export function markOthers(el: HTMLElement, others: readonly Peer[] | undefined): void {
  const names = others && others.length ? others.map((p) => p.name).join(', ') : '';
  if ((el.dataset.selectedBy ?? '') === names) return;
  if (names) {
    el.dataset.selectedBy = names;
    el.style.setProperty('--peer-color', others?.[0]?.color ?? '#888888');
    el.classList.add('remote-selected');
    el.title = `Selected by ${names}`;
  } else {
    delete el.dataset.selectedBy;
    el.style.removeProperty('--peer-color');
    el.classList.remove('remote-selected');
    el.removeAttribute('title');
  }
}
