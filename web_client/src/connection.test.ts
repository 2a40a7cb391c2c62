import { describe, expect, it } from 'vitest';

import { isTerminal, stateLabel, syncUrl, terminalState } from './connection';
import { parseRoute, sessionHash } from './route';

describe('sync connection', () => {
  it('builds the socket URL from the page location', () => {
    expect(syncUrl({ protocol: 'http:', host: '127.0.0.1:8000' })).toBe('ws://127.0.0.1:8000/sync');
    expect(syncUrl({ protocol: 'https:', host: 'jam.example' })).toBe('wss://jam.example/sync');
  });

  it('maps the server close codes to what a person is told', () => {
    expect(stateLabel(terminalState(4401) ?? 'closed')).toBe('not signed in');
    expect(stateLabel(terminalState(4403) ?? 'closed')).toBe('no access');
    expect(stateLabel(terminalState(4410) ?? 'closed')).toBe('the session was restored; reload');
    expect(terminalState(1006)).toBeNull();
    expect(terminalState(null)).toBeNull();
    expect(isTerminal('forbidden')).toBe(true);
    expect(isTerminal('synced')).toBe(false);
  });
});

describe('routes', () => {
  it('parses session links and round-trips ids', () => {
    expect(parseRoute('')).toEqual({ name: 'home' });
    expect(parseRoute('#/')).toEqual({ name: 'home' });
    expect(parseRoute('#/s/abc-123')).toEqual({ name: 'session', id: 'abc-123' });
    expect(parseRoute('#/s/abc/')).toEqual({ name: 'session', id: 'abc' });
    expect(parseRoute('#/s/%E0%A4%A')).toEqual({ name: 'home' });
    expect(parseRoute(sessionHash('a b/c'))).toEqual({ name: 'session', id: 'a b/c' });
  });
});
