// Hash routes: `#/` (home: sign-in or session list), `#/s/<sessionId>` and
// `#/invite/<token>` (accept an invite link, then open its session).

export type Route = { name: 'home' } | { name: 'session'; id: string } | { name: 'invite'; token: string };

const PATTERNS: [RegExp, (value: string) => Route][] = [
  [/^#\/s\/([^/?#]+)\/?$/, (id) => ({ name: 'session', id })],
  [/^#\/invite\/([^/?#]+)\/?$/, (token) => ({ name: 'invite', token })],
];

export function parseRoute(hash: string): Route {
  for (const [pattern, make] of PATTERNS) {
    const m = pattern.exec(hash);
    if (!m || !m[1]) continue;
    try {
      const value = decodeURIComponent(m[1]);
      if (value) return make(value);
    } catch {
      // malformed escape: fall back to home
    }
  }
  return { name: 'home' };
}

export function sessionHash(id: string): string {
  return `#/s/${encodeURIComponent(id)}`;
}

export function inviteHash(token: string): string {
  return `#/invite/${encodeURIComponent(token)}`;
}

/** The link an owner hands out: this page, opened on the invite route. */
export function inviteLink(token: string, pageUrl: string): string {
  const url = new URL(pageUrl);
  url.hash = inviteHash(token);
  return url.toString();
}
