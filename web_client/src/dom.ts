// A tiny element builder: text always goes through textContent, never innerHTML.

type Attrs = Record<string, string | number | boolean | null | undefined>;
type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'testid') el.setAttribute('data-testid', String(value));
    else if (key === 'class') el.className = String(value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

/** Set an input's value without losing the caret of a person typing in it. */
export function setInputValue(input: HTMLInputElement, value: string): void {
  if (input.value === value) return;
  if (document.activeElement === input) {
    const start = input.selectionStart ?? value.length;
    const end = input.selectionEnd ?? start;
    input.value = value;
    const max = value.length;
    input.setSelectionRange(Math.min(start, max), Math.min(end, max));
  } else {
    input.value = value;
  }
}

/** Copy a link field's text to the clipboard; the button says how it went, then reads "Copy link" again. */
export async function copyLink(field: HTMLInputElement, button: HTMLElement): Promise<void> {
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = 'Copied';
  } catch {
    // no clipboard permission (insecure origin, some browsers): the link is selected to copy by hand
    button.textContent = 'Press Ctrl+C';
  }
  setTimeout(() => (button.textContent = 'Copy link'), 2000);
}
