// JSON API client for the Escenario server (`/api`, see DESIGN.md §3).
//
// Auth is by bearer token kept in localStorage; every request carries
// `Authorization: Bearer <token>`, so the cookie + CSRF path is never needed.
// Errors come back as `{error: {code, message}}`; they are raised as ApiError.

export interface User {
  id: string;
  email: string;
  name: string;
}

export type Role = 'owner' | 'editor' | 'viewer';

export interface SessionSummary {
  id: string;
  title: string;
  role: Role | string;
  created_at?: string;
  updated_at?: string;
  owner_id?: string;
}

export type InviteRole = 'editor' | 'viewer';

export interface Member {
  user_id: string;
  email: string;
  name: string;
  role: Role | string;
}

export interface Invite {
  token: string;
  role: Role | string;
  /** Unix seconds. */
  expires_at: number;
}

export interface AuthResult {
  token: string;
  /** Signup always returns it; login is expected to, and `me()` fills it in otherwise. */
  user: User;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Fallback wording for an error response whose body says nothing useful. */
export function statusMessage(status: number): string {
  switch (status) {
    case 400:
      return 'The request was not valid.';
    case 401:
      return 'You are not signed in.';
    case 403:
      return 'You do not have access to this.';
    case 404:
      return 'Not found.';
    case 409:
      return 'That conflicts with something that already exists.';
    case 413:
      return 'That is too large.';
    case 422:
      return 'Some fields are not valid.';
    case 429:
      return 'Too many requests; wait a moment and try again.';
    default:
      if (status >= 500) return `The server had a problem (HTTP ${status}).`;
      return `Request failed (HTTP ${status}).`;
  }
}

/**
 * Turn an error response (status + raw body text) into an ApiError.
 * Understands the contract's `{error: {code, message}}` and degrades to a
 * status-based message for anything else (HTML error pages, empty bodies, ...).
 */
export function parseError(status: number, bodyText: string): ApiError {
  let code = `http_${status}`;
  let message = '';
  const text = bodyText.trim();
  if (text) {
    try {
      const body: unknown = JSON.parse(text);
      if (isRecord(body)) {
        const err = body.error;
        if (isRecord(err)) {
          if (typeof err.code === 'string' && err.code) code = err.code;
          if (typeof err.message === 'string') message = err.message.trim();
        } else if (typeof err === 'string') {
          message = err.trim();
        } else if (typeof body.message === 'string') {
          message = body.message.trim();
        } else if (typeof body.detail === 'string') {
          message = body.detail.trim();
        }
      }
    } catch {
      // not JSON: fall through to the status wording
    }
  }
  return new ApiError(status, code, message || statusMessage(status));
}

/** Message to show a person for anything thrown by an API call. */
export function errorMessage(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof TypeError) return 'Cannot reach the server. Check your connection and try again.';
  if (err instanceof Error && err.message) return err.message;
  return 'Something went wrong.';
}

export interface TokenStore {
  get(): string | null;
  set(token: string | null): void;
}

const TOKEN_KEY = 'escenario.token';

export function localTokenStore(storage: Storage | undefined = globalThis.localStorage): TokenStore {
  let memory: string | null = null;
  return {
    get() {
      try {
        return storage ? storage.getItem(TOKEN_KEY) : memory;
      } catch {
        return memory;
      }
    },
    set(token) {
      memory = token;
      try {
        if (!storage) return;
        if (token === null) storage.removeItem(TOKEN_KEY);
        else storage.setItem(TOKEN_KEY, token);
      } catch {
        // storage unavailable (private mode, quota): keep it in memory
      }
    },
  };
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export class ApiClient {
  readonly tokens: TokenStore;
  private readonly base: string;
  private readonly fetchImpl: FetchLike;

  constructor(tokens: TokenStore, base = '/api', fetchImpl?: FetchLike) {
    this.tokens = tokens;
    this.base = base;
    this.fetchImpl = fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
  }

  get token(): string | null {
    return this.tokens.get();
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    const token = this.tokens.get();
    if (token) headers.Authorization = `Bearer ${token}`;
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await this.fetchImpl(`${this.base}${path}`, init);
    const text = await res.text();
    if (!res.ok) throw parseError(res.status, text);
    if (!text.trim()) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(res.status, 'bad_response', 'The server sent a response that could not be read.');
    }
  }

  async signup(email: string, password: string, name: string): Promise<AuthResult> {
    const res = await this.request<AuthResult>('POST', '/auth/signup', { email, password, name });
    this.tokens.set(res.token);
    return res;
  }

  async login(email: string, password: string): Promise<AuthResult> {
    const res = await this.request<{ token: string; user?: User }>('POST', '/auth/login', { email, password });
    this.tokens.set(res.token);
    const user = res.user ?? (await this.me());
    return { token: res.token, user };
  }

  async logout(): Promise<void> {
    try {
      if (this.tokens.get()) await this.request<unknown>('POST', '/auth/logout');
    } finally {
      this.tokens.set(null);
    }
  }

  async me(): Promise<User> {
    const res = await this.request<{ user: User }>('GET', '/me');
    return res.user;
  }

  async listSessions(): Promise<SessionSummary[]> {
    const res = await this.request<{ sessions?: SessionSummary[] }>('GET', '/sessions');
    return Array.isArray(res?.sessions) ? res.sessions : [];
  }

  async createSession(title: string): Promise<SessionSummary> {
    return this.request<SessionSummary>('POST', '/sessions', { title });
  }

  async renameSession(id: string, title: string): Promise<SessionSummary> {
    return this.request<SessionSummary>('PATCH', `/sessions/${encodeURIComponent(id)}`, { title });
  }

  /** Soft delete: the owner can restore it for a grace period (`restoreSession`). */
  async deleteSession(id: string): Promise<void> {
    await this.request<unknown>('DELETE', `/sessions/${encodeURIComponent(id)}`);
  }

  async restoreSession(id: string): Promise<SessionSummary> {
    return this.request<SessionSummary>('POST', `/sessions/${encodeURIComponent(id)}/restore`);
  }

  /** Add someone who already has an account (404 `user_not_found` otherwise). */
  async addMember(sessionId: string, email: string, role: InviteRole): Promise<Member> {
    return this.request<Member>('POST', `/sessions/${encodeURIComponent(sessionId)}/members`, { email, role });
  }

  /** Everyone in the session, owner first, then by name (any member may ask). */
  async listMembers(sessionId: string): Promise<Member[]> {
    const res = await this.request<{ members?: Member[] }>('GET', `/sessions/${encodeURIComponent(sessionId)}/members`);
    return Array.isArray(res?.members) ? res.members : [];
  }

  /** Owner only; the member's open sockets reconnect with the new role. */
  async changeMemberRole(sessionId: string, userId: string, role: InviteRole): Promise<Member> {
    return this.request<Member>(
      'PATCH',
      `/sessions/${encodeURIComponent(sessionId)}/members/${encodeURIComponent(userId)}`,
      { role },
    );
  }

  /** Owner only (or a member removing themself); their sockets close at once. */
  async removeMember(sessionId: string, userId: string): Promise<void> {
    await this.request<unknown>('DELETE', `/sessions/${encodeURIComponent(sessionId)}/members/${encodeURIComponent(userId)}`);
  }

  /** A signed single-use invite link for someone without an account yet. */
  async createInvite(sessionId: string, role: InviteRole): Promise<Invite> {
    return this.request<Invite>('POST', `/sessions/${encodeURIComponent(sessionId)}/invites`, { role });
  }

  async acceptInvite(token: string): Promise<SessionSummary> {
    return this.request<SessionSummary>('POST', `/invites/${encodeURIComponent(token)}/accept`);
  }
}
