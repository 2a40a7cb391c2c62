// The "Members…" dialog. Everyone in a session sees who is in it; the owner also changes a
// member's role, removes members (after a confirm step), and invites someone by e-mail with a
// role (editor or viewer). When no account uses that address, it offers a signed single-use
// invite link instead (`#/invite/<token>`, accepted by main.ts once the person has signed up).
// `inviteErrorText` and the list's rules (memberlist.ts) are pure and tested.

import { ApiError, errorMessage, type ApiClient, type InviteRole } from './api';
import { h, copyLink } from './dom';
import { memberErrorText, memberViews, removeQuestion, removedText, roleChangedText, type MemberView } from './memberlist';
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
  /** The "Members…" button, placed by the session view (every member; owners also manage). */
  readonly button: HTMLButtonElement;
  readonly root: HTMLDivElement;
  private readonly list: HTMLUListElement;
  private readonly listStatus: HTMLParagraphElement;
  private readonly listError: HTMLDivElement;
  private readonly inviteSection: HTMLDivElement;
  private readonly email: HTMLInputElement;
  private readonly role: HTMLSelectElement;
  private readonly submit: HTMLButtonElement;
  private readonly makeLink: HTMLButtonElement;
  private readonly link: HTMLInputElement;
  private readonly copy: HTMLButtonElement;
  private readonly message: HTMLParagraphElement;
  private readonly error: HTMLDivElement;
  private readonly close: HTMLButtonElement;
  private myRole: string | null = null;
  private views: MemberView[] = [];
  /** Bumped by every list request, so a slow answer cannot overwrite a newer one. */
  private listGeneration = 0;
  /** The status line says "Loading…" (cleared by the first answer, unlike a change's message). */
  private loading = false;

  constructor(
    private readonly api: ApiClient,
    private readonly sessionId: string,
  ) {
    this.button = h('button', { type: 'button', class: 'tbtn secondary', testid: 'members-open', title: 'See who is in this session', hidden: true }, 'Members…');
    this.list = h('ul', { class: 'session-list member-list', testid: 'member-list', 'aria-label': 'Members' });
    this.listStatus = h('p', { class: 'muted', testid: 'member-status', role: 'status' });
    this.listError = h('div', { class: 'export-error', testid: 'member-error', role: 'alert', hidden: true });
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
    this.close = h('button', { type: 'button', class: 'secondary', testid: 'members-close' }, 'Close');
    const form = h(
      'form',
      { class: 'invite-form' },
      h('label', {}, 'E-mail', this.email),
      h('label', {}, 'Role', this.role),
      h('div', { class: 'export-actions' }, this.submit),
    );
    this.inviteSection = h(
      'div',
      { class: 'members-invite', hidden: true },
      h('h3', {}, 'Invite people'),
      form,
      this.error,
      this.makeLink,
      this.link,
      this.copy,
      this.message,
    );
    const panel = h(
      'div',
      { class: 'dialog-panel members-panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': `members-title-${sessionId}` },
      h('h2', { id: `members-title-${sessionId}` }, 'Members'),
      this.list,
      this.listError,
      this.listStatus,
      this.inviteSection,
      h('div', { class: 'export-actions' }, this.close),
    );
    this.root = h('div', { class: 'dialog-backdrop', testid: 'members-dialog', hidden: true }, panel);
    this.button.addEventListener('click', () => this.open());
    this.close.addEventListener('click', () => (this.root.hidden = true));
    this.root.addEventListener('pointerdown', (e) => {
      if (e.target === this.root) this.root.hidden = true;
    });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.invite();
    });
    this.makeLink.addEventListener('click', () => void this.createLink());
    this.link.addEventListener('focus', () => this.link.select());
    this.copy.addEventListener('click', () => void copyLink(this.link, this.copy));
    // Keys typed in the dialog are the dialog's, not the timeline's shortcuts behind it.
    this.root.addEventListener('keydown', (e) => {
      e.stopPropagation();
      if (e.key === 'Escape') this.root.hidden = true;
    });
    this.root.addEventListener('keyup', (e) => e.stopPropagation());
  }

  /** Called on every render of the session view: cheap unless the role changed. */
  setRole(role: string | null): void {
    if (role === this.myRole) return;
    this.myRole = role;
    const owner = role === 'owner';
    this.button.hidden = role === null;
    this.button.title = owner ? 'Invite people and manage who is in this session' : 'See who is in this session';
    this.inviteSection.hidden = !owner;
    if (role === null) {
      this.root.hidden = true;
      return;
    }
    if (!this.root.hidden) void this.refresh(); // the list's controls depend on the role
  }

  open(): void {
    this.reset();
    this.listError.hidden = true;
    this.listStatus.textContent = 'Loading the members…';
    this.loading = true;
    this.root.hidden = false;
    void this.refresh();
    if (this.myRole === 'owner') this.email.focus();
    else this.close.focus();
  }

  /** Load the list again and redraw it; an error says so above the (kept) old list. */
  private async refresh(): Promise<void> {
    const generation = ++this.listGeneration;
    try {
      const members = await this.api.listMembers(this.sessionId);
      if (generation !== this.listGeneration) return;
      this.views = memberViews(members, this.myRole);
      this.renderList();
      if (this.loading) this.listStatus.textContent = '';
      this.loading = false;
    } catch (err) {
      if (generation !== this.listGeneration) return;
      this.showListError(memberErrorText(err, 'list'));
    }
  }

  private renderList(): void {
    this.list.replaceChildren(...this.views.map((v) => this.memberRow(v)));
  }

  private memberRow(v: MemberView): HTMLLIElement {
    const who = h(
      'span',
      { class: 'member-who' },
      h('span', { testid: 'member-name' }, v.label),
      h('span', { class: 'muted', testid: 'member-email' }, v.email),
    );
    const li = h('li', { testid: 'member-row', 'data-user-id': v.userId, 'data-role': v.role }, who);
    if (!v.manageable) {
      li.append(h('span', { class: 'badge', testid: 'member-role-badge' }, v.role));
      return li;
    }
    const select = h(
      'select',
      { testid: 'member-role', 'aria-label': `Role of ${v.label}` },
      h('option', { value: 'editor' }, 'Editor'),
      h('option', { value: 'viewer' }, 'Viewer'),
    );
    select.value = v.role;
    const remove = h('button', { type: 'button', class: 'danger', testid: 'member-remove' }, 'Remove');
    select.addEventListener('change', () => void this.changeRole(v, select, remove));
    remove.addEventListener('click', () => this.askRemove(v, li));
    li.append(h('span', { class: 'row-actions' }, select, remove));
    return li;
  }

  private clearListMessages(): void {
    this.loading = false;
    this.listError.hidden = true;
    this.listStatus.textContent = '';
  }

  private showListError(text: string): void {
    this.loading = false;
    this.listStatus.textContent = '';
    this.listError.textContent = text;
    this.listError.hidden = false;
  }

  private async changeRole(v: MemberView, select: HTMLSelectElement, remove: HTMLButtonElement): Promise<void> {
    const role: InviteRole = select.value === 'viewer' ? 'viewer' : 'editor';
    if (role === v.role) return;
    this.clearListMessages();
    select.disabled = true;
    remove.disabled = true;
    try {
      const member = await this.api.changeMemberRole(this.sessionId, v.userId, role);
      this.listStatus.textContent = roleChangedText(v.label, String(member.role));
    } catch (err) {
      select.value = v.role; // what the server still has, until the refresh below says otherwise
      this.showListError(memberErrorText(err, 'role', v.label));
    }
    await this.refresh();
  }

  /** The row turns into a question; only its Remove button deletes. */
  private askRemove(v: MemberView, li: HTMLLIElement): void {
    this.clearListMessages();
    const yes = h('button', { type: 'button', class: 'danger', testid: 'member-remove-confirm' }, 'Remove');
    const no = h('button', { type: 'button', class: 'secondary', testid: 'member-remove-cancel' }, 'Cancel');
    li.replaceChildren(
      h('span', { class: 'confirm-text', testid: 'member-remove-question' }, removeQuestion(v.label)),
      h('span', { class: 'row-actions' }, yes, no),
    );
    no.addEventListener('click', () => li.replaceWith(this.memberRow(v)));
    yes.addEventListener('click', () => void this.remove(v, yes, no));
    no.focus();
  }

  private async remove(v: MemberView, yes: HTMLButtonElement, no: HTMLButtonElement): Promise<void> {
    yes.disabled = true;
    no.disabled = true;
    try {
      await this.api.removeMember(this.sessionId, v.userId);
      this.listStatus.textContent = removedText(v.label);
    } catch (err) {
      this.showListError(memberErrorText(err, 'remove', v.label));
    }
    await this.refresh();
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
      void this.refresh();
    } catch (err) {
      this.error.textContent = inviteErrorText(err, email);
      this.error.hidden = false;
      this.makeLink.hidden = !(err instanceof ApiError && err.code === 'user_not_found');
    } finally {
      this.submit.disabled = false;
    }
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
