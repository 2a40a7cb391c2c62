// Hash routes: `#/` (home: sign-in or session list) and `#/s/<sessionId>`.

export type Route = { name: 'home' } | { name: 'session'; id: string };

export function parseRoute(hash: string): Route {
  const m = /^#\/s\/([^/?#]+)\/?$/.exec(hash);
  if (m && m[1]) {
    try {
      const id = decodeURIComponent(m[1]);
      if (id) return { name: 'session', id };
    } catch {
      // malformed escape: fall back to home
    }
  }
  return { name: 'home' };
}

export function sessionHash(id: string): string {
  return `#/s/${encodeURIComponent(id)}`;
}
