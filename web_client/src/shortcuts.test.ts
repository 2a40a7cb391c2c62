import { describe, expect, it } from 'vitest';

import { isTextEntry, SHORTCUT_HELP, shortcutFor } from './shortcuts';

const key = (k: string, mods: Partial<{ ctrlKey: boolean; metaKey: boolean; shiftKey: boolean; altKey: boolean }> = {}) => ({
  key: k,
  ctrlKey: false,
  metaKey: false,
  shiftKey: false,
  altKey: false,
  ...mods,
});

describe('shortcuts', () => {
  it('maps the transport and editing keys', () => {
    expect(shortcutFor(key(' '))).toBe('play-stop');
    expect(shortcutFor(key('Home'))).toBe('to-start');
    expect(shortcutFor(key('l'))).toBe('loop');
    expect(shortcutFor(key('L', { shiftKey: true }))).toBe('loop');
    expect(shortcutFor(key('k'))).toBe('metronome');
    expect(shortcutFor(key('Delete'))).toBe('delete');
    expect(shortcutFor(key('Backspace'))).toBe('delete');
    expect(shortcutFor(key('m'))).toBe('mute');
    expect(shortcutFor(key('s'))).toBe('solo');
    expect(shortcutFor(key('?', { shiftKey: true }))).toBe('help');
    expect(shortcutFor(key('Escape'))).toBe('escape');
  });

  it('maps Ctrl and Cmd combinations', () => {
    expect(shortcutFor(key('z', { ctrlKey: true }))).toBe('undo');
    expect(shortcutFor(key('z', { metaKey: true }))).toBe('undo');
    expect(shortcutFor(key('Z', { ctrlKey: true, shiftKey: true }))).toBe('redo');
    expect(shortcutFor(key('z', { metaKey: true, shiftKey: true }))).toBe('redo');
    expect(shortcutFor(key('y', { ctrlKey: true }))).toBe('redo');
    expect(shortcutFor(key('d', { ctrlKey: true }))).toBe('duplicate');
  });

  it("leaves the browser's own shortcuts alone", () => {
    expect(shortcutFor(key('s', { ctrlKey: true }))).toBeNull();
    expect(shortcutFor(key('l', { ctrlKey: true }))).toBeNull();
    expect(shortcutFor(key('m', { altKey: true }))).toBeNull();
    expect(shortcutFor(key('z', { ctrlKey: true, altKey: true }))).toBeNull();
    expect(shortcutFor(key('x'))).toBeNull();
    expect(shortcutFor(key('F5'))).toBeNull();
  });

  it('knows which focused elements take typing', () => {
    expect(isTextEntry({ tagName: 'INPUT', type: 'text' })).toBe(true);
    expect(isTextEntry({ tagName: 'input', type: 'number' })).toBe(true);
    expect(isTextEntry({ tagName: 'INPUT' })).toBe(true);
    expect(isTextEntry({ tagName: 'INPUT', type: 'range' })).toBe(false);
    expect(isTextEntry({ tagName: 'BUTTON' })).toBe(false);
    expect(isTextEntry({ tagName: 'SELECT' })).toBe(true);
    expect(isTextEntry({ tagName: 'DIV', isContentEditable: true })).toBe(true);
    expect(isTextEntry(null)).toBe(false);
  });

  it('lists every action in the help', () => {
    const text = SHORTCUT_HELP.map((s) => `${s.keys} ${s.what}`).join('\n');
    for (const k of ['Space', 'Home', 'L', 'Delete', 'Ctrl/⌘ + D', 'Ctrl/⌘ + Z', 'M / S', '?']) expect(text).toContain(k);
  });
});
