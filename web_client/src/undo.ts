// Undo/redo of one's OWN edits. The manager watches `session`, `tracks` and `trackOrder` but
// tracks only transactions with the local edit origin: a collaborator's changes arrive with
// the provider as origin and transport moves carry their own origin, so neither is ever
// undone here (Yjs undo then reverts only the items one's own transactions touched).

import * as Y from 'yjs';

import { LOCAL_ORIGIN } from './origins';
import { sessionMap, trackOrder, tracksMap } from './tracks';

/** Edits closer together than this merge into one undo step (typing a name, dragging a fader). */
export const CAPTURE_MS = 500;

export function createUndoManager(doc: Y.Doc): Y.UndoManager {
  return new Y.UndoManager([sessionMap(doc), tracksMap(doc), trackOrder(doc)], {
    trackedOrigins: new Set<unknown>([LOCAL_ORIGIN]),
    captureTimeout: CAPTURE_MS,
  });
}

/**
 * Run a discrete gesture (a drag, a delete, a colour change) as its own undo step: never
 * merged with an edit just before or after it, however quick.
 */
export function asOneStep<T>(um: Y.UndoManager, fn: () => T): T {
  um.stopCapturing();
  try {
    return fn();
  } finally {
    um.stopCapturing();
  }
}

/**
 * Group a continuous gesture (typing a name, dragging a fader) into one undo step however
 * long it pauses: call `beginGroup` when it starts (focus, pointer down) and `endGroup` when
 * it ends (blur, change). Nothing else of one's own happens in between, so nothing else
 * gets merged.
 */
export function beginGroup(um: Y.UndoManager): void {
  um.stopCapturing();
  um.captureTimeout = Number.MAX_SAFE_INTEGER;
}

export function endGroup(um: Y.UndoManager): void {
  um.captureTimeout = CAPTURE_MS;
  um.stopCapturing();
}
