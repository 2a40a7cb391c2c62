// The transport bar: shared transport (to start, play, stop, loop, tempo, metre), local
// helpers (metronome, snap, zoom), undo/redo, the shortcuts list, listen/export and the master
// meter. It only builds and updates elements; the session view wires what they do.

import { barBeatLabel, formatTime } from './daw';
import { h } from './dom';
import { TS_UNITS, type Range } from './transport';

export interface TransportState {
  editable: boolean;
  playing: boolean;
  loop: Range | null;
  bpm: number;
  timeSignature: [number, number];
  canUndo: boolean;
  canRedo: boolean;
}

/** What the local playback button shows (playback.ts's status, levels as dBFS text). */
export interface LocalAudioView {
  state: string;
  assets: number;
  rmsDb: readonly [string, string] | null;
  position: number | null;
  message: string | null;
}

export class TransportBar {
  readonly root: HTMLDivElement;
  readonly toStart = h('button', { type: 'button', testid: 'to-start', class: 'tbtn secondary', title: 'Back to the start (Home)' }, '⇤');
  readonly play = h('button', { type: 'button', testid: 'play', class: 'tbtn play', title: 'Play (Space)', 'aria-pressed': 'false' }, '▶ Play');
  readonly stop = h('button', { type: 'button', testid: 'stop', class: 'tbtn secondary', title: 'Stop (again: back to start)' }, '■ Stop');
  readonly loop = h('button', { type: 'button', testid: 'loop', class: 'tbtn secondary', title: 'Loop on/off (L); drag on the ruler to set its range', 'aria-pressed': 'false' }, '⟲ Loop');
  readonly metronome = h('button', { type: 'button', testid: 'metronome', class: 'tbtn secondary', title: 'Metronome, only you hear it (K)', 'aria-pressed': 'false', 'data-clicks': '0' }, '♩ Click');
  readonly position = h('span', { class: 'lcd', testid: 'position' }, '1.1  0:00.0');
  readonly tempo = h('span', { class: 'lcd muted', testid: 'tempo' });
  readonly bpm = h('input', { type: 'number', testid: 'bpm', class: 'num', min: 20, max: 999, step: 'any', 'aria-label': 'Tempo (BPM)', title: 'Tempo (BPM)' });
  readonly tsBeats = h('input', { type: 'number', testid: 'ts-beats', class: 'num small-num', min: 1, max: 32, step: 1, 'aria-label': 'Beats per bar' });
  readonly tsUnit = h('select', { testid: 'ts-unit', 'aria-label': 'Beat unit' }, ...TS_UNITS.map((u) => h('option', { value: u }, String(u))));
  readonly snap = h('button', { type: 'button', testid: 'snap', class: 'tbtn secondary', title: 'Snap to the grid (hold Alt or Shift while dragging to bypass)', 'aria-pressed': 'true' }, '⊞ Snap');
  readonly undo = h('button', { type: 'button', testid: 'undo', class: 'tbtn secondary', title: 'Undo your last edit (Ctrl/⌘+Z)', disabled: true }, '↶');
  readonly redo = h('button', { type: 'button', testid: 'redo', class: 'tbtn secondary', title: 'Redo (Ctrl/⌘+Shift+Z)', disabled: true }, '↷');
  readonly help = h('button', { type: 'button', testid: 'help', class: 'tbtn secondary', title: 'Keyboard shortcuts (?)' }, '?');
  /** Local playback of the timeline through this browser (playback.ts); its data-* show its state and level. */
  readonly localAudio = h(
    'button',
    { type: 'button', testid: 'local-audio', class: 'tbtn secondary active', 'aria-pressed': 'true', 'data-state': 'idle', title: 'Play the timeline on this computer when the transport plays' },
    '♫ Local',
  );
  readonly listen = h('button', { type: 'button', testid: 'listen', class: 'tbtn secondary', 'aria-pressed': 'false', title: 'Hear the server mix' }, '◉ Listen');
  readonly audio = h('audio', { testid: 'preview-audio', preload: 'none' });
  /** The session view puts its Export… and Share… buttons here (export.ts, share.ts). */
  readonly extras = h('span', { class: 'group', testid: 'transport-extras' });
  readonly zoomOut = h('button', { type: 'button', class: 'tbtn secondary', testid: 'zoom-out', title: 'Zoom out' }, '−');
  readonly zoomIn = h('button', { type: 'button', class: 'tbtn secondary', testid: 'zoom-in', title: 'Zoom in' }, '+');
  readonly masterMeter = h('div', { class: 'meter master', testid: 'master-meter', title: 'Master level' }, h('div', { class: 'fill' }));

  constructor() {
    this.root = h(
      'div',
      { class: 'transport', testid: 'transport', 'data-playing': 'false' },
      h('span', { class: 'group' }, this.toStart, this.play, this.stop, this.loop, this.metronome),
      this.position,
      h('span', { class: 'group tempo-edit' }, this.bpm, h('span', { class: 'muted small' }, 'BPM'), this.tsBeats, h('span', { class: 'muted' }, '/'), this.tsUnit),
      this.tempo,
      h('span', { class: 'group' }, this.snap, this.undo, this.redo, this.help),
      h('span', { class: 'spacer' }),
      this.localAudio,
      this.listen,
      this.extras,
      h('span', { class: 'zoom' }, this.zoomOut, this.zoomIn),
      h('span', { class: 'master-label muted' }, 'Master'),
      this.masterMeter,
      this.audio,
    );
  }

  update(s: TransportState): void {
    for (const b of [this.toStart, this.play, this.stop, this.loop, this.bpm, this.tsBeats, this.tsUnit]) b.disabled = !s.editable;
    this.undo.disabled = !s.editable || !s.canUndo;
    this.redo.disabled = !s.editable || !s.canRedo;
    this.root.dataset.playing = String(s.playing);
    this.play.setAttribute('aria-pressed', String(s.playing));
    this.play.classList.toggle('active', s.playing);
    this.loop.setAttribute('aria-pressed', String(s.loop !== null));
    this.loop.dataset.range = s.loop ? `${s.loop[0]}-${s.loop[1]}` : '';
    const [beats, unit] = s.timeSignature;
    this.tempo.textContent = `${s.bpm} BPM  ${beats}/${unit}`;
    // a field being typed in keeps what the person typed until they commit it
    if (document.activeElement !== this.bpm) this.bpm.value = String(s.bpm);
    if (document.activeElement !== this.tsBeats) this.tsBeats.value = String(beats);
    if (!TS_UNITS.includes(unit) && !this.tsUnit.querySelector(`option[value="${unit}"]`)) {
      this.tsUnit.append(h('option', { value: unit }, String(unit)));
    }
    this.tsUnit.value = String(unit);
  }

  /** The position display: bar.beat and minutes:seconds. */
  showPosition(seconds: number, bpm: number, ts: readonly [number, number]): void {
    const text = `${barBeatLabel(seconds, bpm, ts)}  ${formatTime(seconds)}`;
    if (this.position.textContent !== text) this.position.textContent = text;
  }

  /** Local playback: on/off, its state, and the level it plays (dBFS per side, "-inf" when silent). */
  setLocalAudio(on: boolean, s: LocalAudioView): void {
    const b = this.localAudio;
    b.setAttribute('aria-pressed', String(on));
    b.classList.toggle('active', on);
    b.dataset.state = s.state;
    b.dataset.assets = String(s.assets);
    b.dataset.rmsLeft = s.rmsDb?.[0] ?? '';
    b.dataset.rmsRight = s.rmsDb?.[1] ?? '';
    b.dataset.position = s.position === null ? '' : String(s.position);
    b.title =
      s.state === 'blocked'
        ? 'The browser holds the sound until you click on the page'
        : (s.message ?? 'Play the timeline on this computer when the transport plays');
  }

  setMetronome(on: boolean, clicks: number): void {
    this.metronome.setAttribute('aria-pressed', String(on));
    this.metronome.dataset.clicks = String(clicks);
  }
}
