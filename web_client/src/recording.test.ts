import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';

import { TRANSPORT_ORIGIN } from './origins';
import { readRecording, readTransport, seek, setTransport, toggleRecording } from './transport';

describe('the jam Record button (toggleRecording)', () => {
  it('arms recording and starts a stopped transport from where it is, in one transaction', () => {
    const doc = new Y.Doc();
    seek(doc, 12.5, 1000);
    const origins: unknown[] = [];
    doc.on('afterTransaction', (tr: Y.Transaction) => origins.push(tr.origin));
    expect(toggleRecording(doc, 5000)).toBe(true);
    expect(origins).toEqual([TRANSPORT_ORIGIN]);
    expect(readRecording(doc)).toBe(true);
    expect(readTransport(doc)).toMatchObject({ playing: true, startedAt: 5000, position: 12.5 });
  });

  it('leaves a playing transport alone, and disarming does not stop it', () => {
    const doc = new Y.Doc();
    setTransport(doc, true, 1000);
    toggleRecording(doc, 3000);
    expect(readTransport(doc)).toMatchObject({ playing: true, startedAt: 1000, position: 0 });
    expect(toggleRecording(doc, 4000)).toBe(false);
    expect(readRecording(doc)).toBe(false);
    expect(readTransport(doc).playing).toBe(true);
  });
});
