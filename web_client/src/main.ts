// Escenario browser client: sign up / log in, list and create sessions, open one in the
// collaborative DAW view (session.ts).

import './style.css';

import { ApiClient, ApiError, errorMessage, localTokenStore, type SessionSummary, type User } from './api';
import { h } from './dom';
import { parseRoute, sessionHash, type Route } from './route';
import { SessionRow } from './sessionrow';
import { SessionView } from './session';

class App {
  private readonly api = new ApiClient(localTokenStore());
  private readonly main: HTMLElement;
  private readonly account: HTMLElement;
  private readonly errorEl: HTMLElement;
  private user: User | null = null;
  private sessions: SessionSummary[] = [];
  private view: SessionView | null = null;
  /** Bumped on every navigation so late responses for an old page are dropped. */
  private generation = 0;

  constructor(root: HTMLElement) {
    this.errorEl = h('div', { testid: 'error', class: 'error', role: 'alert', hidden: true });
    this.account = h('div', { class: 'account', testid: 'account' });
    this.main = h('main', { class: 'main' });
    root.replaceChildren(
      h('header', { class: 'topbar' }, h('a', { href: '#/', class: 'brand' }, 'Escenario'), this.account),
      this.errorEl,
      this.main,
    );
    window.addEventListener('hashchange', () => {
      this.clearError();
      void this.route();
    });
  }

  async start(): Promise<void> {
    if (this.api.token) {
      try {
        this.user = await this.api.me();
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) this.api.tokens.set(null);
        else this.showError(errorMessage(err));
      }
    }
    await this.route();
  }

  showError(message: string): void {
    this.errorEl.textContent = message;
    this.errorEl.hidden = false;
  }

  clearError(): void {
    this.errorEl.textContent = '';
    this.errorEl.hidden = true;
  }

  private renderAccount(): void {
    if (!this.user) {
      this.account.replaceChildren();
      return;
    }
    const logout = h('button', { type: 'button', testid: 'logout', class: 'secondary' }, 'Log out');
    logout.addEventListener('click', () => void this.logout());
    this.account.replaceChildren(
      h('span', { testid: 'user-name', class: 'user-name' }, this.user.name || this.user.email),
      logout,
    );
  }

  private async logout(): Promise<void> {
    try {
      await this.api.logout();
    } catch {
      // the token is dropped locally either way
    }
    this.user = null;
    this.sessions = [];
    this.clearError();
    if (window.location.hash && window.location.hash !== '#/') window.location.hash = '#/';
    else await this.route();
  }

  private closeSession(): void {
    this.view?.destroy();
    this.view = null;
  }

  async route(): Promise<void> {
    const gen = ++this.generation;
    const route: Route = parseRoute(window.location.hash);
    this.renderAccount();
    if (!this.user) {
      this.closeSession();
      document.title = 'Escenario';
      this.renderAuth(authNote(route));
      return;
    }
    if (route.name === 'session') {
      await this.openSession(route.id, gen);
    } else if (route.name === 'invite') {
      this.closeSession();
      await this.acceptInvite(route.token, gen);
    } else {
      this.closeSession();
      document.title = 'Escenario';
      await this.renderHome(gen);
    }
  }

  // ---- sign up / log in ---------------------------------------------------

  private renderAuth(note: string | null): void {
    const signupEmail = h('input', { type: 'email', testid: 'signup-email', required: true, autocomplete: 'email', name: 'email' });
    const signupName = h('input', { type: 'text', testid: 'signup-name', required: true, autocomplete: 'name', name: 'name' });
    const signupPassword = h('input', {
      type: 'password',
      testid: 'signup-password',
      required: true,
      autocomplete: 'new-password',
      name: 'password',
    });
    const signupSubmit = h('button', { type: 'submit', testid: 'signup-submit' }, 'Sign up');
    const signup = h(
      'form',
      { class: 'card', testid: 'signup-form' },
      h('h2', {}, 'Create an account'),
      h('label', {}, 'Name', signupName),
      h('label', {}, 'Email', signupEmail),
      h('label', {}, 'Password', signupPassword),
      signupSubmit,
    );
    signup.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.submitAuth(signupSubmit, () =>
        this.api.signup(signupEmail.value.trim(), signupPassword.value, signupName.value.trim()),
      );
    });

    const loginEmail = h('input', { type: 'email', testid: 'login-email', required: true, autocomplete: 'username', name: 'email' });
    const loginPassword = h('input', {
      type: 'password',
      testid: 'login-password',
      required: true,
      autocomplete: 'current-password',
      name: 'password',
    });
    const loginSubmit = h('button', { type: 'submit', testid: 'login-submit' }, 'Log in');
    const login = h(
      'form',
      { class: 'card', testid: 'login-form' },
      h('h2', {}, 'Log in'),
      h('label', {}, 'Email', loginEmail),
      h('label', {}, 'Password', loginPassword),
      loginSubmit,
    );
    login.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.submitAuth(loginSubmit, () => this.api.login(loginEmail.value.trim(), loginPassword.value));
    });

    this.main.replaceChildren(
      note ? h('p', { class: 'notice', testid: 'auth-note' }, note) : '',
      h('div', { class: 'auth' }, login, signup),
    );
  }

  private async submitAuth(button: HTMLButtonElement, call: () => Promise<{ user: User }>): Promise<void> {
    this.clearError();
    button.disabled = true;
    try {
      const res = await call();
      this.user = res.user;
      await this.route();
    } catch (err) {
      this.showError(errorMessage(err));
    } finally {
      button.disabled = false;
    }
  }

  // ---- session list -------------------------------------------------------

  private async renderHome(gen: number): Promise<void> {
    const titleInput = h('input', {
      type: 'text',
      testid: 'session-title-input',
      placeholder: 'New session title',
      maxlength: 200,
      required: true,
      'aria-label': 'Session title',
    });
    const create = h('button', { type: 'submit', testid: 'create-session' }, 'Create session');
    const form = h('form', { class: 'create-session' }, titleInput, create);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const title = titleInput.value.trim();
      if (!title) return;
      void this.createSession(title, create);
    });
    const list = h('ul', { class: 'session-list', testid: 'session-list' }, h('li', { class: 'muted' }, 'Loading…'));
    this.main.replaceChildren(h('section', { class: 'card wide' }, h('h2', {}, 'Your sessions'), form, list));

    try {
      const sessions = await this.api.listSessions();
      if (gen !== this.generation) return;
      this.sessions = sessions;
      this.renderSessionList(list);
    } catch (err) {
      if (gen !== this.generation) return;
      list.replaceChildren();
      this.handleApiError(err);
    }
  }

  private renderSessionList(list: HTMLUListElement): void {
    if (this.sessions.length === 0) {
      list.replaceChildren(h('li', { class: 'muted', testid: 'no-sessions' }, 'No sessions yet: create one above.'));
      return;
    }
    const sorted = [...this.sessions].sort((a, b) => (b.updated_at ?? '').localeCompare(a.updated_at ?? ''));
    list.replaceChildren(
      ...sorted.map(
        (s) =>
          new SessionRow(this.api, s, {
            renamed: (updated) => {
              this.sessions = this.sessions.map((x) => (x.id === updated.id ? { ...x, title: updated.title } : x));
            },
            deleted: (id) => {
              this.sessions = this.sessions.filter((x) => x.id !== id);
            },
            restored: (restored) => {
              this.sessions = [restored, ...this.sessions.filter((x) => x.id !== restored.id)];
            },
            failed: (err) => this.handleApiError(err),
          }).root,
      ),
    );
  }

  // ---- invite links -------------------------------------------------------

  private async acceptInvite(token: string, gen: number): Promise<void> {
    document.title = 'Escenario';
    this.main.replaceChildren(h('section', { class: 'card wide', testid: 'invite-accepting' }, h('p', {}, 'Joining the session…')));
    try {
      const joined = await this.api.acceptInvite(token);
      if (gen !== this.generation) return;
      this.sessions = [joined, ...this.sessions.filter((s) => s.id !== joined.id)];
      // replace, not push: Back should not accept the (now used) invite again
      window.location.replace(sessionHash(joined.id));
    } catch (err) {
      if (gen !== this.generation) return;
      if (err instanceof ApiError && err.status === 401) {
        this.handleApiError(err);
        return;
      }
      this.main.replaceChildren(
        h(
          'section',
          { class: 'card wide', testid: 'invite-failed' },
          h('h2', {}, 'This invite could not be used'),
          h('p', {}, errorMessage(err)),
          h('a', { href: '#/' }, 'Go to your sessions'),
        ),
      );
    }
  }

  private async createSession(title: string, button: HTMLButtonElement): Promise<void> {
    this.clearError();
    button.disabled = true;
    try {
      const created = await this.api.createSession(title);
      // the creator owns it; fill in what a minimal 201 body might leave out
      const summary: SessionSummary = { ...created, title: created.title || title, role: created.role || 'owner' };
      this.sessions = [summary, ...this.sessions.filter((s) => s.id !== summary.id)];
      window.location.hash = sessionHash(summary.id);
    } catch (err) {
      this.handleApiError(err);
    } finally {
      button.disabled = false;
    }
  }

  private handleApiError(err: unknown): void {
    if (err instanceof ApiError && err.status === 401) {
      this.api.tokens.set(null);
      this.user = null;
      void this.route().then(() => this.showError(err.message));
      return;
    }
    this.showError(errorMessage(err));
  }

  // ---- one session --------------------------------------------------------

  private async openSession(id: string, gen: number): Promise<void> {
    const token = this.api.token;
    if (!this.user || !token) return;
    if (this.view && this.main.contains(this.view.root) && this.view.root.dataset.sessionId === id) return;
    this.closeSession();

    const known = this.sessions.find((s) => s.id === id) ?? null;
    const view = new SessionView({
      sessionId: id,
      token,
      user: this.user,
      listTitle: known?.title ?? null,
      role: known ? String(known.role) : null,
    });
    this.view = view;
    this.main.replaceChildren(view.root);

    if (!known) {
      // opened straight from a link: learn the role from the session list
      try {
        const sessions = await this.api.listSessions();
        if (gen !== this.generation || this.view !== view) return;
        this.sessions = sessions;
        const found = sessions.find((s) => s.id === id);
        if (found) view.setRole(String(found.role), found.title);
      } catch (err) {
        if (gen !== this.generation || this.view !== view) return;
        this.handleApiError(err);
      }
    }
  }
}

function authNote(route: Route): string | null {
  if (route.name === 'session') return 'Sign in to open this session.';
  if (route.name === 'invite') return 'You were invited to a session: log in, or create an account first, to join it.';
  return null;
}

const root = document.getElementById('app');
if (root) {
  const app = new App(root);
  void app.start();
}
