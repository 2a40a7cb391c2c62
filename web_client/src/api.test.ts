import { describe, expect, it } from 'vitest';

import { ApiClient, ApiError, errorMessage, parseError, type TokenStore } from './api';

function memoryTokens(initial: string | null = null): TokenStore {
  let t = initial;
  return { get: () => t, set: (v) => void (t = v) };
}

function jsonResponse(status: number, body: unknown): Response {
  return new Response(typeof body === 'string' ? body : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

describe('parseError', () => {
  it('reads the contract shape {error:{code,message}}', () => {
    const err = parseError(409, JSON.stringify({ error: { code: 'email_taken', message: 'That email is already registered.' } }));
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(409);
    expect(err.code).toBe('email_taken');
    expect(err.message).toBe('That email is already registered.');
  });

  it('falls back to a status message for non-JSON or empty bodies', () => {
    expect(parseError(502, '<html>Bad Gateway</html>').message).toMatch(/server had a problem/);
    expect(parseError(502, '').code).toBe('http_502');
    expect(parseError(401, '').message).toBe('You are not signed in.');
    expect(parseError(404, 'null').message).toBe('Not found.');
  });

  it('keeps the code when the message is missing or blank', () => {
    const err = parseError(422, JSON.stringify({ error: { code: 'invalid', message: '  ' } }));
    expect(err.code).toBe('invalid');
    expect(err.message).toBe('Some fields are not valid.');
  });

  it('accepts a plain string error or a detail field', () => {
    expect(parseError(400, JSON.stringify({ error: 'bad title' })).message).toBe('bad title');
    expect(parseError(400, JSON.stringify({ detail: 'nope' })).message).toBe('nope');
  });
});

describe('errorMessage', () => {
  it('explains network failures and passes API messages through', () => {
    expect(errorMessage(new TypeError('Failed to fetch'))).toMatch(/Cannot reach the server/);
    expect(errorMessage(new ApiError(403, 'forbidden', 'No access.'))).toBe('No access.');
    expect(errorMessage('weird')).toBe('Something went wrong.');
  });
});

describe('ApiClient', () => {
  it('sends the bearer token and JSON body, stores the token on login', async () => {
    const calls: { url: string; init: RequestInit | undefined }[] = [];
    const tokens = memoryTokens();
    const api = new ApiClient(tokens, '/api', async (url, init) => {
      calls.push({ url, init });
      if (url === '/api/auth/login') return jsonResponse(200, { token: 'tok123', user: { id: 'u1', email: 'a@b.c', name: 'A' } });
      return jsonResponse(200, { sessions: [{ id: 's1', title: 'Jam', role: 'owner' }] });
    });
    const res = await api.login('a@b.c', 'pw');
    expect(res.user.name).toBe('A');
    expect(tokens.get()).toBe('tok123');
    expect(JSON.parse(String(calls[0]?.init?.body))).toEqual({ email: 'a@b.c', password: 'pw' });
    expect(calls[0]?.init?.method).toBe('POST');

    const sessions = await api.listSessions();
    expect(sessions.map((s) => s.id)).toEqual(['s1']);
    const headers = calls[1]?.init?.headers as Record<string, string>;
    expect(headers.Authorization).toBe('Bearer tok123');
    expect(calls[1]?.init?.body).toBeUndefined();
  });

  it('fetches the user with /me when login returns only a token', async () => {
    const api = new ApiClient(memoryTokens(), '/api', async (url) =>
      url === '/api/me' ? jsonResponse(200, { user: { id: 'u2', email: 'x@y.z', name: 'X' } }) : jsonResponse(200, { token: 't' }),
    );
    expect((await api.login('x@y.z', 'pw')).user.id).toBe('u2');
  });

  it('throws ApiError with the server message and keeps no token on failure', async () => {
    const tokens = memoryTokens();
    const api = new ApiClient(tokens, '/api', async () =>
      jsonResponse(401, { error: { code: 'bad_credentials', message: 'Wrong email or password.' } }),
    );
    await expect(api.login('a@b.c', 'nope')).rejects.toMatchObject({
      status: 401,
      code: 'bad_credentials',
      message: 'Wrong email or password.',
    });
    expect(tokens.get()).toBeNull();
  });

  it('drops the local token on logout even when the server call fails', async () => {
    const tokens = memoryTokens('old');
    const api = new ApiClient(tokens, '/api', async () => jsonResponse(500, ''));
    await expect(api.logout()).rejects.toBeInstanceOf(ApiError);
    expect(tokens.get()).toBeNull();
  });
});
