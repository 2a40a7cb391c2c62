// What the timeline needs to know about assets: their length (to draw "to the end" clips and
// bound trims) and their waveform peaks, fetched once per asset and shared by every clip.

import type { AssetPeaks } from './timeline';
import { assetPeakWidth } from './peaks';

type Entry =
  | { state: 'loading' }
  | { state: 'known'; seconds: number; peaks?: Promise<AssetPeaks> }
  | { state: 'failed' };

export class AssetStore {
  private readonly entries = new Map<string, Entry>();
  /** While the session's asset list is loading, single lookups wait for it. */
  private listing = false;

  constructor(
    private readonly sessionId: string,
    private readonly token: string,
    /** Called when a length became known (the timeline re-lays its clips). */
    private readonly onChange: () => void,
  ) {}

  private get headers(): HeadersInit {
    return { Authorization: `Bearer ${this.token}`, Accept: 'application/json' };
  }

  /** Learn every asset of the session at once (one request instead of one per asset). */
  async prefetch(): Promise<void> {
    this.listing = true;
    try {
      const res = await fetch(`/api/sessions/${encodeURIComponent(this.sessionId)}/assets`, { headers: this.headers });
      if (!res.ok) return;
      const body = (await res.json()) as { assets?: { asset_id?: unknown; duration?: unknown }[] };
      for (const a of body.assets ?? []) {
        if (typeof a.asset_id !== 'string' || typeof a.duration !== 'number') continue;
        const e = this.entries.get(a.asset_id);
        if (e?.state === 'known') continue;
        this.entries.set(a.asset_id, { state: 'known', seconds: a.duration });
      }
    } catch {
      // unreachable: lengths are then learnt one by one
    } finally {
      this.listing = false;
      this.onChange();
    }
  }

  /** The asset's length in seconds, or null while unknown (a lookup is started). */
  seconds(assetId: string): number | null {
    const e = this.entries.get(assetId);
    if (e?.state === 'known') return e.seconds;
    if (!e && !this.listing) void this.lookup(assetId);
    return null;
  }

  /** Whole-asset peaks, or null while the length is unknown. */
  peaks(assetId: string): Promise<AssetPeaks> | null {
    const e = this.entries.get(assetId);
    if (e?.state !== 'known') {
      if (!e && !this.listing) void this.lookup(assetId);
      return null;
    }
    if (!e.peaks) {
      const width = assetPeakWidth(e.seconds);
      const seconds = e.seconds;
      e.peaks = fetch(`/api/assets/${encodeURIComponent(assetId)}/peaks?width=${width}`, { headers: this.headers }).then(async (res) => {
        if (!res.ok) throw new Error(`peaks: HTTP ${res.status}`);
        const body = (await res.json()) as { min?: unknown; max?: unknown };
        const min = Array.isArray(body.min) ? body.min.map(Number) : [];
        const max = Array.isArray(body.max) ? body.max.map(Number) : [];
        return { peaks: { min, max }, seconds };
      });
      // a failure is retried the next time the clip is drawn
      e.peaks.catch(() => {
        if (this.entries.get(assetId) === e) delete e.peaks;
      });
    }
    return e.peaks;
  }

  private async lookup(assetId: string): Promise<void> {
    this.entries.set(assetId, { state: 'loading' });
    try {
      const res = await fetch(`/api/assets/${encodeURIComponent(assetId)}`, { headers: this.headers });
      if (!res.ok) throw new Error(`asset: HTTP ${res.status}`);
      const body = (await res.json()) as { duration?: unknown };
      if (typeof body.duration !== 'number') throw new Error('asset: no duration');
      this.entries.set(assetId, { state: 'known', seconds: body.duration });
      this.onChange();
    } catch {
      // missing or foreign asset: drawn as a plain box, and never asked for again
      this.entries.set(assetId, { state: 'failed' });
    }
  }
}
