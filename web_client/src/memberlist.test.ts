import { describe, expect, it } from 'vitest';

import { ApiClient, ApiError, type Member } from './api';
import { memberErrorText, memberViews, removeQuestion, removedText, roleChangedText, roleWithArticle } from './memberlist';

const MEMBERS: Member[] = [
  { user_id: 'u-olga', email: 'olga@example.com', name: 'Olga', role: 'owner' },
  { user_id: 'u-eddie', email: 'eddie@example.com', name: 'Eddie', role: 'editor' },
  { user_id: 'u-vera', email: 'vera@example.com', name: '  ', role: 'viewer' },
];

describe('members list rules', () => {
  it('lets the owner manage everyone but the owner', () => {
    const views = memberViews(MEMBERS, 'owner');
    expect(views.map((v) => [v.userId, v.manageable])).toEqual([
      ['u-olga', false],
      ['u-eddie', true],
      ['u-vera', true],
    ]);
  });

  it('shows editors and viewers a read-only list', () => {
    for (const role of ['editor', 'viewer', null]) {
      expect(memberViews(MEMBERS, role).some((v) => v.manageable)).toBe(false);
    }
  });

  it('labels a blank name by the e-mail address and keeps the role', () => {
    const vera = memberViews(MEMBERS, 'owner')[2];
    expect(vera).toEqual({ userId: 'u-vera', label: 'vera@example.com', email: 'vera@example.com', role: 'viewer', manageable: true });
  });

  it('puts the owner first whatever order the server sends', () => {
    const reordered = [MEMBERS[1]!, MEMBERS[2]!, MEMBERS[0]!];
    expect(memberViews(reordered, 'viewer').map((v) => v.userId)).toEqual(['u-olga', 'u-eddie', 'u-vera']);
    expect(memberViews([], 'owner')).toEqual([]);
  });
});

describe('members list words', () => {
  it('says what changed', () => {
    expect(roleWithArticle('editor')).toBe('an editor');
    expect(roleWithArticle('owner')).toBe('the owner');
    expect(roleChangedText('Eddie', 'viewer')).toBe('Eddie is now a viewer.');
    expect(removeQuestion('Eddie')).toBe('Remove Eddie from this session? They lose access at once.');
    expect(removedText('Eddie')).toBe('Eddie was removed from this session.');
  });

  it('explains failures by the server’s error code', () => {
    expect(memberErrorText(new ApiError(404, 'member_not_found', 'x'), 'remove', 'Eddie')).toBe(
      'Eddie is no longer a member of this session.',
    );
    expect(memberErrorText(new ApiError(409, 'is_owner', 'x'), 'role', 'Olga')).toContain('owner of a session cannot');
    expect(memberErrorText(new ApiError(404, 'session_not_found', 'x'), 'list')).toContain('no longer a member of it');
    expect(memberErrorText(new ApiError(403, 'role_forbidden', 'x'), 'role', 'Eddie')).toBe(
      'Only the owner of this session can change roles or remove people.',
    );
    expect(memberErrorText(new ApiError(422, 'validation_error', 'x'), 'role', 'Eddie')).toContain('editor or viewer');
  });

  it('falls back to the action and the message', () => {
    const offline = new TypeError('fetch failed');
    expect(memberErrorText(offline, 'list')).toBe(
      'Could not load the members: Cannot reach the server. Check your connection and try again.',
    );
    expect(memberErrorText(new ApiError(500, 'internal_error', 'boom'), 'role', 'Eddie')).toBe('Could not change Eddie’s role: boom');
    expect(memberErrorText(new ApiError(500, 'internal_error', 'boom'), 'remove', 'Eddie')).toBe('Could not remove Eddie: boom');
  });
});

describe('members API calls', () => {
  it('lists, changes a role by user id and removes, escaping the ids', async () => {
    const calls: { method: string; url: string; body: unknown }[] = [];
    const api = new ApiClient({ get: () => 't', set: () => undefined }, '/api', async (url, init) => {
      calls.push({ method: String(init?.method), url, body: init?.body === undefined ? undefined : JSON.parse(String(init.body)) });
      if (init?.method === 'DELETE') return new Response(null, { status: 204 });
      const body = init?.method === 'GET' ? { members: MEMBERS } : { ...MEMBERS[1], role: 'viewer' };
      return new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json' } });
    });
    expect(await api.listMembers('s 1')).toEqual(MEMBERS);
    expect((await api.changeMemberRole('s 1', 'u/eddie', 'viewer')).role).toBe('viewer');
    await api.removeMember('s 1', 'u/eddie');
    expect(calls).toEqual([
      { method: 'GET', url: '/api/sessions/s%201/members', body: undefined },
      { method: 'PATCH', url: '/api/sessions/s%201/members/u%2Feddie', body: { role: 'viewer' } },
      { method: 'DELETE', url: '/api/sessions/s%201/members/u%2Feddie', body: undefined },
    ]);
  });
});
