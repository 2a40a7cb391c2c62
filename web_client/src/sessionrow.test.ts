import { describe, expect, it } from 'vitest';

import { ApiError } from './api';
import { inviteErrorText, inviteLinkText } from './members';
import { inviteHash, inviteLink, parseRoute } from './route';
import { MAX_TITLE, canDelete, canRename, renamedTitle } from './sessionrow';

describe('session row rules', () => {
  it('lets owners and editors rename, only owners delete', () => {
    expect([canRename('owner'), canRename('editor'), canRename('viewer')]).toEqual([true, true, false]);
    expect([canDelete('owner'), canDelete('editor'), canDelete('viewer')]).toEqual([true, false, false]);
  });

  it('saves only a changed, non-blank, trimmed title of bounded length', () => {
    expect(renamedTitle('  New  ', 'Old')).toBe('New');
    expect(renamedTitle('Old', 'Old')).toBeNull();
    expect(renamedTitle('   ', 'Old')).toBeNull();
    expect(renamedTitle('x'.repeat(MAX_TITLE + 5), 'Old')).toHaveLength(MAX_TITLE);
  });
});

describe('invite routes and links', () => {
  it('parses invite links and round-trips tokens', () => {
    expect(parseRoute('#/invite/abc.def')).toEqual({ name: 'invite', token: 'abc.def' });
    expect(parseRoute('#/invite/abc/')).toEqual({ name: 'invite', token: 'abc' });
    expect(parseRoute('#/invite/')).toEqual({ name: 'home' });
    expect(parseRoute('#/invite/%E0%A4%A')).toEqual({ name: 'home' });
    expect(parseRoute(inviteHash('a-b_c.d=e'))).toEqual({ name: 'invite', token: 'a-b_c.d=e' });
  });

  it('builds the link on the page the owner is on, replacing its hash', () => {
    expect(inviteLink('tok.sig', 'https://band.example/#/s/abc')).toBe('https://band.example/#/invite/tok.sig');
    expect(inviteLink('t', 'http://127.0.0.1:8000/')).toBe('http://127.0.0.1:8000/#/invite/t');
  });
});

describe('invite errors', () => {
  it('explains a missing account and offers the link route', () => {
    const err = new ApiError(404, 'user_not_found', 'no account uses this e-mail address');
    expect(inviteErrorText(err, 'x@y.z')).toContain('Nobody has signed up with x@y.z');
  });

  it('words the other failures for the person inviting', () => {
    expect(inviteErrorText(new ApiError(409, 'is_owner', 'owner'), 'a@b.c')).toContain('you already own');
    expect(inviteErrorText(new ApiError(422, 'validation_error', 'role'), 'a@b.c')).toContain('Check the e-mail');
    expect(inviteErrorText(new ApiError(403, 'forbidden', 'no'), 'a@b.c')).toContain('Only the owner');
    expect(inviteErrorText(new TypeError('fetch failed'), 'a@b.c')).toBe(
      'Could not invite: Cannot reach the server. Check your connection and try again.',
    );
  });
});

describe('invite link text', () => {
  it('says how long the link lasts and what it makes its user', () => {
    const now = 1_000_000_000_000;
    expect(inviteLinkText('editor', now / 1000 + 7 * 86_400, now)).toBe(
      'Send this link: it works once, for 7 days, and makes whoever opens it an editor.',
    );
    expect(inviteLinkText('viewer', now / 1000 + 3_600, now)).toContain('for 1 day, and makes whoever opens it a viewer.');
  });
});
