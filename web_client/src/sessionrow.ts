// One row of the session list: open it, rename it in place (owners and editors: Enter saves,
// Escape cancels), delete it after a confirm step (owners), then "Deleted — Undo" while the
// server's restore grace period lasts. The role rules and title check are pure and tested.

import { type ApiClient, type SessionSummary } from './api';
import { h } from './dom';
import { sessionHash } from './route';

export const MAX_TITLE = 200;

export function canRename(role: string): boolean {
  return role === 'owner' || role === 'editor';
}

export function canDelete(role: string): boolean {
  return role === 'owner';
}

/** The title to save, or null when there is nothing to save (blank or unchanged). */
export function renamedTitle(input: string, current: string): string | null {
  const title = input.trim().slice(0, MAX_TITLE);
  return title && title !== current ? title : null;
}

export interface SessionRowEvents {
  renamed(session: SessionSummary): void;
  deleted(id: string): void;
  restored(session: SessionSummary): void;
  failed(err: unknown): void;
}

export class SessionRow {
  readonly root: HTMLLIElement;
  private session: SessionSummary;
  private busy = false;

  constructor(
    private readonly api: ApiClient,
    session: SessionSummary,
    private readonly events: SessionRowEvents,
  ) {
    this.session = session;
    this.root = h('li', { 'data-session-id': session.id, testid: 'session-row' });
    this.showNormal();
  }

  private get title(): string {
    return this.session.title || 'Untitled session';
  }

  private button(testid: string, label: string, onClick: () => void, secondary = true): HTMLButtonElement {
    const b = h('button', { type: 'button', class: secondary ? 'secondary small' : 'small', testid }, label);
    b.addEventListener('click', onClick);
    return b;
  }

  private showNormal(): void {
    const role = String(this.session.role);
    this.root.replaceChildren(
      h('a', { href: sessionHash(this.session.id), testid: 'session-link', 'data-session-id': this.session.id }, this.title),
      h('span', { class: 'badge', testid: 'session-role' }, role),
      h(
        'span',
        { class: 'row-actions' },
        canRename(role) ? this.button('session-rename', 'Rename', () => this.showRename()) : null,
        canDelete(role) ? this.button('session-delete', 'Delete', () => this.showConfirm()) : null,
      ),
    );
  }

  private showRename(): void {
    const input = h('input', {
      type: 'text',
      testid: 'session-rename-input',
      maxlength: MAX_TITLE,
      'aria-label': 'New session title',
    });
    input.value = this.session.title;
    let done = false;
    const finish = (save: boolean): void => {
      if (done) return;
      done = true;
      const title = save ? renamedTitle(input.value, this.session.title) : null;
      if (title === null) this.showNormal();
      else void this.rename(title, input);
    };
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        finish(true);
      } else if (e.key === 'Escape') {
        e.preventDefault();
        finish(false);
      }
    });
    // Leaving the field keeps what was typed, like the track names in the session view.
    input.addEventListener('blur', () => finish(true));
    this.root.replaceChildren(input, h('span', { class: 'muted' }, 'Enter to save, Esc to cancel'));
    input.focus();
    input.select();
  }

  private async rename(title: string, input: HTMLInputElement): Promise<void> {
    input.disabled = true;
    try {
      const updated = await this.api.renameSession(this.session.id, title);
      this.session = { ...this.session, title: updated.title || title };
      this.events.renamed(this.session);
    } catch (err) {
      this.events.failed(err);
    }
    this.showNormal();
  }

  private showConfirm(): void {
    const yes = this.button('session-delete-confirm', 'Delete', () => void this.remove(), false);
    yes.classList.add('danger');
    this.root.replaceChildren(
      h('span', { class: 'confirm-text', testid: 'session-delete-question' }, `Delete “${this.title}” for everyone in it?`),
      yes,
      this.button('session-delete-cancel', 'Cancel', () => this.showNormal()),
    );
    yes.focus();
  }

  private async remove(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.api.deleteSession(this.session.id);
      this.events.deleted(this.session.id);
      this.root.classList.add('deleted');
      this.root.replaceChildren(
        h('span', { class: 'muted', testid: 'session-deleted' }, `Deleted “${this.title}” — `),
        this.button('session-undo', 'Undo', () => void this.restore()),
      );
    } catch (err) {
      this.events.failed(err);
      this.showNormal();
    } finally {
      this.busy = false;
    }
  }

  private async restore(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const restored = await this.api.restoreSession(this.session.id);
      this.session = { ...this.session, ...restored, role: restored.role || 'owner' };
      this.events.restored(this.session);
      this.root.classList.remove('deleted');
      this.showNormal();
    } catch (err) {
      this.events.failed(err);
    } finally {
      this.busy = false;
    }
  }
}
