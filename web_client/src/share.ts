// The owner's Share control: a public listening link to the session's live preview for people
// without an account (`/listen/<token>`, served by the server). Turn it on, copy it, make a new
// one (the old one stops working) or turn it off (`/api/sessions/{id}/share`, owners only).
// `shareText` is pure and tested; the rest is DOM and API glue.

import { errorMessage, type ApiClient } from './api';
import { h, copyLink } from './dom';

export interface ShareState {
  enabled: boolean;
  url?: string;
  listen_path?: string;
  token?: string;
  /** Unix seconds. */
  expires_at?: number;
}

export const LINK_DAYS = 7;

/** What the panel says about the link. */
export function shareText(state: ShareState | null, nowMs: number): string {
  if (state === null) return 'Checking the listening link…';
  if (!state.enabled || !state.expires_at) {
    return 'Listening link is off. Turn it on to let anyone with the link hear this session live, without an account.';
  }
  const left = state.expires_at * 1000 - nowMs;
  if (left <= 0) return 'The listening link has expired. Make a new one.';
  // Rounded: a link made a moment ago for 7 days reads "7 days", not "6 days".
  const days = left >= 84_600_000 ? Math.round(left / 86_400_000) : 0;
  const hours = Math.round(left / 3_600_000);
  const when = days >= 1 ? `${days} day${days === 1 ? '' : 's'}` : hours >= 1 ? `${hours} hour${hours === 1 ? '' : 's'}` : 'less than an hour';
  return `Anyone with this link can listen live for ${when}. Turning it off or making a new link stops it at once.`;
}

/** The absolute link to show and copy. */
export function shareUrl(state: ShareState, origin: string): string {
  if (state.listen_path) return new URL(state.listen_path, origin).toString();
  return state.url ?? '';
}

export class SharePanel {
  /** The "Share" button, placed by the session view (owners only). */
  readonly button: HTMLButtonElement;
  readonly root: HTMLDivElement;
  private readonly text: HTMLParagraphElement;
  private readonly link: HTMLInputElement;
  private readonly enable: HTMLButtonElement;
  private readonly copy: HTMLButtonElement;
  private readonly reissue: HTMLButtonElement;
  private readonly disable: HTMLButtonElement;
  private readonly error: HTMLDivElement;
  private state: ShareState | null = null;
  private busy = false;

  constructor(
    private readonly api: ApiClient,
    private readonly sessionId: string,
  ) {
    this.button = h('button', { type: 'button', class: 'tbtn secondary', testid: 'share-open', title: 'A link for listeners without an account', hidden: true }, 'Share…');
    this.text = h('p', { class: 'muted', testid: 'share-status' });
    this.link = h('input', { type: 'text', readonly: true, testid: 'share-url', 'aria-label': 'Listening link', hidden: true });
    this.enable = h('button', { type: 'button', testid: 'share-enable' }, 'Turn on link');
    this.copy = h('button', { type: 'button', testid: 'share-copy' }, 'Copy link');
    this.reissue = h('button', { type: 'button', class: 'secondary', testid: 'share-reissue' }, 'New link');
    this.disable = h('button', { type: 'button', class: 'secondary', testid: 'share-disable' }, 'Turn off');
    this.error = h('div', { class: 'export-error', testid: 'share-error', role: 'alert', hidden: true });
    const close = h('button', { type: 'button', class: 'secondary', testid: 'share-close' }, 'Close');
    const panel = h(
      'div',
      { class: 'dialog-panel share-panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': `share-title-${sessionId}` },
      h('h2', { id: `share-title-${sessionId}` }, 'Share a listening link'),
      this.text,
      this.link,
      this.error,
      h('div', { class: 'export-actions' }, this.enable, this.copy, this.reissue, this.disable, close),
    );
    this.root = h('div', { class: 'dialog-backdrop', testid: 'share-dialog', hidden: true }, panel);
    this.button.addEventListener('click', () => void this.open());
    close.addEventListener('click', () => (this.root.hidden = true));
    this.root.addEventListener('pointerdown', (e) => {
      if (e.target === this.root) this.root.hidden = true;
    });
    this.enable.addEventListener('click', () => void this.change('POST'));
    this.reissue.addEventListener('click', () => void this.change('POST'));
    this.disable.addEventListener('click', () => void this.change('DELETE'));
    this.copy.addEventListener('click', () => void copyLink(this.link, this.copy));
    this.link.addEventListener('focus', () => this.link.select());
    // Keys typed in the dialog are the dialog's, not the timeline's shortcuts behind it.
    this.root.addEventListener('keydown', (e) => {
      e.stopPropagation();
      if (e.key === 'Escape') this.root.hidden = true;
    });
    this.root.addEventListener('keyup', (e) => e.stopPropagation());
    this.render();
  }

  /** Only owners manage the link; the button is hidden for everyone else. */
  setOwner(owner: boolean): void {
    this.button.hidden = !owner;
    if (!owner) this.root.hidden = true;
  }

  async open(): Promise<void> {
    this.root.hidden = false;
    this.state = null;
    this.render();
    await this.call(() => this.api.request<ShareState>('GET', `/sessions/${encodeURIComponent(this.sessionId)}/share`));
  }

  private async change(method: 'POST' | 'DELETE'): Promise<void> {
    const path = `/sessions/${encodeURIComponent(this.sessionId)}/share`;
    await this.call(() => this.api.request<ShareState>(method, path, method === 'POST' ? { expires_in_s: LINK_DAYS * 86_400 } : undefined));
  }

  private async call(fn: () => Promise<ShareState>): Promise<void> {
    this.busy = true;
    this.error.hidden = true;
    this.render();
    try {
      this.state = await fn();
    } catch (err) {
      this.error.textContent = `Could not change the listening link: ${errorMessage(err)}`;
      this.error.hidden = false;
    } finally {
      this.busy = false;
      this.render();
    }
  }

  private render(): void {
    const on = this.state?.enabled === true;
    this.text.textContent = shareText(this.state, Date.now());
    this.link.hidden = !on;
    this.link.value = on && this.state ? shareUrl(this.state, window.location.origin) : '';
    this.enable.hidden = on;
    this.copy.hidden = !on;
    this.reissue.hidden = !on;
    this.disable.hidden = !on;
    for (const b of [this.enable, this.copy, this.reissue, this.disable]) b.disabled = this.busy || this.state === null;
  }
}
