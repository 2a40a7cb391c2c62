// The owner's "Members…" dialog: invite someone by e-mail with a role (editor or viewer). When no
// account uses that address, offer a signed single-use invite link instead (`#/invite/<token>`,
// accepted by main.ts once the person has signed up). `inviteErrorText` is pure and tested.

import { ApiError, errorMessage, type ApiClient, type InviteRole } from './api';
import { h } from './dom';
import { inviteLink } from './route';

/** Why adding a member failed, in words for the person inviting. */
export function inviteErrorText(err: unknown, email: string): string {
  if (err instanceof ApiError) {
    switch (err.code) {
      case 'user_not_found':
        return `Nobody has signed up with ${email} yet. Create an invite link and send it to them.`;
      case 'is_owner':
        return 'That is you: you already own this session.';
      case 'validation_error':
      case 'invalid_request':
        return 'Check the e-mail address and the role.';
    }
    if (err.status === 403) return 'Only the owner of this session can invite people.';
  }
  return `Could not invite: ${errorMessage(err)}`;
}

/** What the dialog says about a fresh invite link (`expiresAt` in Unix seconds). */
export function inviteLinkText(role: string, expiresAt: number, nowMs: number): string {
  const days = Math.max(1, Math.round((expiresAt * 1000 - nowMs) / 86_400_000));
  const who = role === 'editor' ? 'an editor' : role === 'viewer' ? 'a viewer' : role;
  return `Send this link: it works once, for ${days} day${days === 1 ? '' : 's'}, and makes whoever opens it ${who}.`;
}

export class MembersDialog {
  /** The "Members…" button, placed by the session view (owners only). */
  readonly button: HTMLButtonElement;
  readonly root: HTMLDivElement;
  private readonly email: HTMLInputElement;
  private readonly role: HTMLSelectElement;
  private readonly submit: HTMLButtonElement;
  private readonly makeLink: HTMLButtonElement;
  private readonly link: HTMLInputElement;
  private readonly copy: HTMLButtonElement;
  private readonly message: HTMLParagraphElement;
  private readonly error: HTMLDivElement;

  constructor(
    private readonly api: ApiClient,
    private readonly sessionId: string,
  ) {
    this.button = h('button', { type: 'button', class: 'tbtn secondary', testid: 'members-open', title: 'Invite people to this session', hidden: true }, 'Members…');
    this.email = h('input', { type: 'email', testid: 'invite-email', required: true, autocomplete: 'off', 'aria-label': 'E-mail address' });
    this.role = h(
      'select',
      { testid: 'invite-role', 'aria-label': 'Role' },
      h('option', { value: 'editor' }, 'Editor (can change the session)'),
      h('option', { value: 'viewer' }, 'Viewer (can only listen and look)'),
    );
    this.submit = h('button', { type: 'submit', testid: 'invite-submit' }, 'Invite');
    this.makeLink = h('button', { type: 'button', testid: 'invite-link-create', hidden: true }, 'Create an invite link');
    this.link = h('input', { type: 'text', readonly: true, testid: 'invite-link', 'aria-label': 'Invite link', hidden: true });
    this.copy = h('button', { type: 'button', class: 'secondary', testid: 'invite-link-copy', hidden: true }, 'Copy link');
    this.message = h('p', { class: 'muted', testid: 'invite-status', role: 'status' });
    this.error = h('div', { class: 'export-error', testid: 'invite-error', role: 'alert', hidden: true });
    const close = h('button', { type: 'button', class: 'secondary', testid: 'members-close' }, 'Close');
    const form = h(
      'form',
      { class: 'invite-form' },
      h('label', {}, 'E-mail', this.email),
      h('label', {}, 'Role', this.role),
      h('div', { class: 'export-actions' }, this.submit, close),
    );
    const panel = h(
      'div',
      { class: 'dialog-panel members-panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': `members-title-${sessionId}` },
      h('h2', { id: `members-title-${sessionId}` }, 'Invite people'),
      form,
      this.error,
      this.makeLink,
      this.link,
      this.copy,
      this.message,
    );
    this.root = h('div', { class: 'dialog-backdrop', testid: 'members-dialog', hidden: true }, panel);
    this.button.addEventListener('click', () => this.open());
    close.addEventListener('click', () => (this.root.hidden = true));
    this.root.addEventListener('pointerdown', (e) => {
      if (e.target === this.root) this.root.hidden = true;
    });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.invite();
    });
    this.makeLink.addEventListener('click', () => void this.createLink());
    this.link.addEventListener('focus', () => this.link.select());
    this.copy.addEventListener('click', () => void this.copyLink());
    // Keys typed in the dialog are the dialog's, not the timeline's shortcuts behind it.
    this.root.addEventListener('keydown', (e) => {
      e.stopPropagation();
      if (e.key === 'Escape') this.root.hidden = true;
    });
    this.root.addEventListener('keyup', (e) => e.stopPropagation());
  }

  setOwner(owner: boolean): void {
    this.button.hidden = !owner;
    if (!owner) this.root.hidden = true;
  }

  open(): void {
    this.reset();
    this.root.hidden = false;
    this.email.focus();
  }

  private reset(): void {
    this.error.hidden = true;
    this.makeLink.hidden = true;
    this.link.hidden = true;
    this.link.value = '';
    this.copy.hidden = true;
    this.message.textContent = '';
  }

  private get chosenRole(): InviteRole {
    return this.role.value === 'viewer' ? 'viewer' : 'editor';
  }

  private async invite(): Promise<void> {
    const email = this.email.value.trim();
    if (!email) return;
    this.reset();
    this.submit.disabled = true;
    try {
      const member = await this.api.addMember(this.sessionId, email, this.chosenRole);
      this.message.textContent = `${member.name || member.email} can now open this session as ${String(member.role)}.`;
      this.email.value = '';
    } catch (err) {
      this.error.textContent = inviteErrorText(err, email);
      this.error.hidden = false;
      this.makeLink.hidden = !(err instanceof ApiError && err.code === 'user_not_found');
    } finally {
      this.submit.disabled = false;
    }
  }

  private async copyLink(): Promise<void> {
    this.link.select();
    try {
      await navigator.clipboard.writeText(this.link.value);
      this.copy.textContent = 'Copied';
    } catch {
      // no clipboard permission (insecure origin, some browsers): the link is selected to copy by hand
      this.copy.textContent = 'Press Ctrl+C';
    }
    setTimeout(() => (this.copy.textContent = 'Copy link'), 2000);
  }

  private async createLink(): Promise<void> {
    this.makeLink.disabled = true;
    try {
      const invite = await this.api.createInvite(this.sessionId, this.chosenRole);
      this.error.hidden = true;
      this.makeLink.hidden = true;
      this.link.value = inviteLink(invite.token, window.location.href);
      this.link.hidden = false;
      this.message.textContent = inviteLinkText(String(invite.role), invite.expires_at, Date.now());
      this.copy.hidden = false;
      this.link.focus();
    } catch (err) {
      this.error.textContent = `Could not create an invite link: ${errorMessage(err)}`;
      this.error.hidden = false;
    } finally {
      this.makeLink.disabled = false;
    }
  }
}
