// The rules and words of the members list in the "Members…" dialog (members.ts): who may change
// whom, and what to tell the person when a change fails. Pure, so it is tested without a DOM.

import { ApiError, errorMessage, type Member } from './api';

/** One row of the list as the dialog draws it. */
export interface MemberView {
  userId: string;
  /** The name, or the e-mail address for someone who left their name blank. */
  label: string;
  email: string;
  role: string;
  /** Whether the person looking may change this member's role and remove them. */
  manageable: boolean;
}

/**
 * The list as seen by someone with `myRole`: only the owner manages, and never the owner's own
 * row (a session has one owner, who can be neither demoted nor removed). The server already
 * sends the owner first; owners are moved first here too so a reordering server cannot hide them.
 */
export function memberViews(members: readonly Member[], myRole: string | null): MemberView[] {
  const owner = myRole === 'owner';
  const views = members.map((m) => ({
    userId: m.user_id,
    label: m.name.trim() || m.email,
    email: m.email,
    role: String(m.role),
    manageable: owner && m.role !== 'owner',
  }));
  return [...views.filter((v) => v.role === 'owner'), ...views.filter((v) => v.role !== 'owner')];
}

/** "an editor", "a viewer", "the owner". */
export function roleWithArticle(role: string): string {
  if (role === 'editor') return 'an editor';
  if (role === 'viewer') return 'a viewer';
  if (role === 'owner') return 'the owner';
  return role;
}

export function roleChangedText(label: string, role: string): string {
  return `${label} is now ${roleWithArticle(role)}.`;
}

export function removeQuestion(label: string): string {
  return `Remove ${label} from this session? They lose access at once.`;
}

export function removedText(label: string): string {
  return `${label} was removed from this session.`;
}

export type MemberAction = 'list' | 'role' | 'remove';

/** Why loading the list, changing a role or removing someone failed, in plain words. */
export function memberErrorText(err: unknown, action: MemberAction, label = ''): string {
  if (err instanceof ApiError) {
    switch (err.code) {
      case 'member_not_found':
        return `${label || 'That person'} is no longer a member of this session.`;
      case 'is_owner':
        return 'The owner of a session cannot be given another role or removed.';
      case 'session_not_found':
        return 'This session is gone, or you are no longer a member of it.';
      case 'validation_error':
        return 'Choose editor or viewer: those are the roles you can give.';
    }
    if (err.status === 403) return 'Only the owner of this session can change roles or remove people.';
  }
  const what =
    action === 'list' ? 'load the members' : action === 'role' ? `change ${label}’s role` : `remove ${label}`;
  return `Could not ${what}: ${errorMessage(err)}`;
}
