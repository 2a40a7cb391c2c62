import { describe, expect, it } from 'vitest';

import { shareText, shareUrl } from './share';

const NOW = 1_700_000_000_000;

describe('share link wording', () => {
  it('says whether the link is on and for how long', () => {
    expect(shareText(null, NOW)).toMatch(/Checking/);
    expect(shareText({ enabled: false }, NOW)).toMatch(/^Listening link is off/);
    expect(shareText({ enabled: true, expires_at: NOW / 1000 + 7 * 86400 }, NOW)).toMatch(/listen live for 7 days\./);
    expect(shareText({ enabled: true, expires_at: NOW / 1000 + 7 * 86400 - 30 }, NOW)).toMatch(/for 7 days\./);
    expect(shareText({ enabled: true, expires_at: NOW / 1000 + 86400 }, NOW)).toMatch(/for 1 day\./);
    expect(shareText({ enabled: true, expires_at: NOW / 1000 + 12 * 3600 }, NOW)).toMatch(/for 12 hours\./);
    expect(shareText({ enabled: true, expires_at: NOW / 1000 + 5 * 3600 }, NOW)).toMatch(/for 5 hours\./);
    expect(shareText({ enabled: true, expires_at: NOW / 1000 + 600 }, NOW)).toMatch(/less than an hour/);
    expect(shareText({ enabled: true, expires_at: NOW / 1000 - 1 }, NOW)).toMatch(/expired/);
  });

  it('builds the link on the page origin from the listen path', () => {
    expect(shareUrl({ enabled: true, listen_path: '/listen/a.1.2.ff', url: 'http://internal:8000/listen/a.1.2.ff' }, 'https://band.example')).toBe(
      'https://band.example/listen/a.1.2.ff',
    );
    expect(shareUrl({ enabled: true, url: 'http://h/listen/x' }, 'https://o')).toBe('http://h/listen/x');
  });
});
