// Keyboard shortcuts: which key does what, and the list the "?" overlay shows.

export type Action =
  | 'play-stop'
  | 'to-start'
  | 'loop'
  | 'metronome'
  | 'delete'
  | 'duplicate'
  | 'undo'
  | 'redo'
  | 'mute'
  | 'solo'
  | 'help'
  | 'escape';

export interface KeyLike {
  key: string;
  ctrlKey: boolean;
  metaKey: boolean;
  shiftKey: boolean;
  altKey: boolean;
}

export const SHORTCUT_HELP: readonly { keys: string; what: string }[] = [
  { keys: 'Space', what: 'Play / stop (for everyone)' },
  { keys: 'Home', what: 'Back to the start' },
  { keys: 'L', what: 'Loop on / off' },
  { keys: 'K', what: 'Metronome on / off (only you hear it)' },
  { keys: 'Click the ruler', what: 'Move the playhead there' },
  { keys: 'Drag on the ruler', what: 'Set the loop range' },
  { keys: 'Delete / Backspace', what: 'Delete the selected clips (or the selected track)' },
  { keys: 'Ctrl/⌘ + D', what: 'Duplicate the selected clips' },
  { keys: 'Ctrl/⌘ + Z', what: 'Undo your last edit' },
  { keys: 'Ctrl/⌘ + Shift + Z, Ctrl + Y', what: 'Redo' },
  { keys: 'M / S', what: 'Mute / solo the selected track' },
  { keys: 'Alt or Shift while dragging', what: 'Move or trim without snapping' },
  { keys: 'Shift/Ctrl + click', what: 'Add a clip to the selection' },
  { keys: 'Esc', what: 'Clear the selection, close this list' },
  { keys: '?', what: 'Show this list' },
];

/** The action for a key press, or null to leave it to the browser. */
export function shortcutFor(e: KeyLike): Action | null {
  const mod = e.ctrlKey || e.metaKey;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (mod && !e.altKey) {
    if (key === 'z') return e.shiftKey ? 'redo' : 'undo';
    if (key === 'y' && !e.shiftKey) return 'redo';
    if (key === 'd' && !e.shiftKey) return 'duplicate';
    return null;
  }
  if (mod || e.altKey) return null;
  switch (key) {
    case ' ':
      return 'play-stop';
    case 'Home':
      return 'to-start';
    case 'l':
      return 'loop';
    case 'k':
      return 'metronome';
    case 'Delete':
    case 'Backspace':
      return 'delete';
    case 'm':
      return 'mute';
    case 's':
      return 'solo';
    case '?':
      return 'help';
    case 'Escape':
      return 'escape';
    default:
      return null;
  }
}

export interface ElementLike {
  tagName: string;
  type?: string;
  isContentEditable?: boolean;
}

const NON_TEXT_INPUTS = new Set(['button', 'checkbox', 'radio', 'range', 'color', 'file', 'submit', 'reset', 'image']);

/** Focus is in a field that takes typing: shortcuts (but Escape) stay out of its way. */
export function isTextEntry(el: ElementLike | null): boolean {
  if (!el) return false;
  if (el.isContentEditable) return true;
  const tag = el.tagName.toUpperCase();
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  if (tag !== 'INPUT') return false;
  return !NON_TEXT_INPUTS.has((el.type ?? 'text').toLowerCase());
}
