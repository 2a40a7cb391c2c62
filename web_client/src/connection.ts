// Pure helpers for the sync connection: the socket URL and what to tell a person
// about its state. The server closes denied sockets with 4401/4403 and a room whose
// document was restored from a backup with 4410 (DESIGN.md §3, §6).

export type ConnState =
  | 'connecting'
  | 'connected'
  | 'synced'
  | 'closed'
  | 'unauthenticated'
  | 'forbidden'
  | 'restored';

export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_RESTORED = 4410;

/** `ws(s)://<host>/sync` for the page's location; the provider appends `/<sessionId>?token=…`. */
export function syncUrl(loc: { protocol: string; host: string }): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/sync`;
}

/** A close code that ends the connection for good, or null for an ordinary drop. */
export function terminalState(code: number | undefined | null): ConnState | null {
  switch (code) {
    case CLOSE_UNAUTHENTICATED:
      return 'unauthenticated';
    case CLOSE_FORBIDDEN:
      return 'forbidden';
    case CLOSE_RESTORED:
      return 'restored';
    default:
      return null;
  }
}

export function isTerminal(state: ConnState): boolean {
  return state === 'unauthenticated' || state === 'forbidden' || state === 'restored';
}

export function stateLabel(state: ConnState): string {
  switch (state) {
    case 'connecting':
      return 'connecting';
    case 'connected':
      return 'connected';
    case 'synced':
      return 'synced';
    case 'closed':
      return 'closed';
    case 'unauthenticated':
      return 'not signed in';
    case 'forbidden':
      return 'no access';
    case 'restored':
      return 'the session was restored; reload';
  }
}
