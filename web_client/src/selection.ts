// The local selection: clips (by id, with the track each is on) and one track (the target of
// M/S and of Delete when no clip is selected). Kept consistent with the document after every
// change: a clip someone deleted leaves the selection, one someone moved keeps its new track.

import type { ClipRef } from './edits';

export class Selection {
  private readonly clips = new Map<string, string>();
  private trackId: string | null = null;

  get track(): string | null {
    return this.trackId;
  }

  get size(): number {
    return this.clips.size;
  }

  hasClip(clipId: string): boolean {
    return this.clips.has(clipId);
  }

  refs(): ClipRef[] {
    return [...this.clips].map(([clipId, trackId]) => ({ trackId, clipId }));
  }

  /** Select a clip (and its track); `additive` toggles it within the current selection. */
  clickClip(ref: ClipRef, additive: boolean): void {
    if (additive) {
      if (this.clips.has(ref.clipId)) this.clips.delete(ref.clipId);
      else this.clips.set(ref.clipId, ref.trackId);
    } else {
      this.clips.clear();
      this.clips.set(ref.clipId, ref.trackId);
    }
    this.trackId = ref.trackId;
  }

  /** Replace the clip selection (after a move or a duplicate). */
  setClips(refs: readonly ClipRef[]): void {
    this.clips.clear();
    for (const r of refs) this.clips.set(r.clipId, r.trackId);
    if (refs[0]) this.trackId = refs[0].trackId;
  }

  selectTrack(trackId: string | null): void {
    this.clips.clear();
    this.trackId = trackId;
  }

  clear(): boolean {
    const had = this.clips.size > 0 || this.trackId !== null;
    this.clips.clear();
    this.trackId = null;
    return had;
  }

  /**
   * Follow the document: `locate` says which track a clip id is on now (null: gone), `hasTrack`
   * whether a track still exists. Returns whether anything changed.
   */
  reconcile(locate: (clipId: string) => string | null, hasTrack: (trackId: string) => boolean): boolean {
    let changed = false;
    for (const [clipId, trackId] of [...this.clips]) {
      const now = locate(clipId);
      if (now === null) {
        this.clips.delete(clipId);
        changed = true;
      } else if (now !== trackId) {
        this.clips.set(clipId, now);
        changed = true;
      }
    }
    if (this.trackId !== null && !hasTrack(this.trackId)) {
      this.trackId = null;
      changed = true;
    }
    return changed;
  }

  /** What awareness carries (docs/session-schema.md, "Awareness"). */
  toPresence(): { clips: string[]; tracks: string[] } {
    return { clips: [...this.clips.keys()].sort(), tracks: this.trackId ? [this.trackId] : [] };
  }
}
