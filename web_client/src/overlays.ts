// Small overlays of the session view: the "?" list of keyboard shortcuts and the track colour
// palette.

import { h } from './dom';
import { SHORTCUT_HELP } from './shortcuts';
import { PALETTE } from './tracks';

export class ShortcutsDialog {
  readonly root: HTMLDivElement;

  constructor() {
    const close = h('button', { type: 'button', class: 'secondary', testid: 'shortcuts-close' }, 'Close');
    const rows = SHORTCUT_HELP.map((s) => h('tr', {}, h('th', { scope: 'row' }, h('kbd', {}, s.keys)), h('td', {}, s.what)));
    const panel = h(
      'div',
      { class: 'dialog-panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'shortcuts-title' },
      h('h2', { id: 'shortcuts-title' }, 'Keyboard shortcuts'),
      h('table', { class: 'shortcuts' }, h('tbody', {}, ...rows)),
      close,
    );
    this.root = h('div', { class: 'dialog-backdrop', testid: 'shortcuts-overlay', hidden: true }, panel);
    close.addEventListener('click', () => this.close());
    this.root.addEventListener('pointerdown', (e) => {
      if (e.target === this.root) this.close();
    });
  }

  get isOpen(): boolean {
    return !this.root.hidden;
  }

  open(): void {
    this.root.hidden = false;
    this.root.querySelector<HTMLButtonElement>('button')?.focus();
  }

  close(): void {
    this.root.hidden = true;
  }

  toggle(): void {
    if (this.isOpen) this.close();
    else this.open();
  }
}

export class ColorPalette {
  readonly root: HTMLDivElement;
  private trackId: string | null = null;

  constructor(private readonly onPick: (trackId: string, color: string) => void) {
    const options = PALETTE.map((color) => {
      const b = h('button', { type: 'button', class: 'color-option', testid: 'color-option', 'data-color': color, 'aria-label': `Colour ${color}`, title: color });
      b.style.background = color;
      b.addEventListener('click', () => {
        const id = this.trackId;
        this.close();
        if (id) this.onPick(id, color);
      });
      return b;
    });
    this.root = h('div', { class: 'color-palette', testid: 'color-palette', role: 'menu', hidden: true }, ...options);
  }

  get isOpen(): boolean {
    return !this.root.hidden;
  }

  /** Open under `anchor` (page coordinates: the palette is positioned absolutely in the view). */
  openFor(trackId: string, anchor: HTMLElement, current: string): void {
    this.trackId = trackId;
    const r = anchor.getBoundingClientRect();
    this.root.style.left = `${r.left + window.scrollX}px`;
    this.root.style.top = `${r.bottom + window.scrollY + 4}px`;
    for (const b of this.root.querySelectorAll<HTMLButtonElement>('button')) {
      b.setAttribute('aria-checked', String(b.dataset.color === current));
    }
    this.root.hidden = false;
    this.root.querySelector<HTMLButtonElement>(`button[data-color="${current}"]`)?.focus();
  }

  close(): void {
    this.root.hidden = true;
    this.trackId = null;
  }
}
