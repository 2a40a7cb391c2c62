// Waveform pictures for clips, rendered once per (asset slice, size, colour) into a PNG and
// shown with <img>. A <canvas> per clip would make every clip a compositor layer of its own
// (Chromium promotes drawn canvases): with a few hundred clips each scroll frame then spent
// ~10 ms committing layers. Images are painted with their clip and shared by equal clips.

export class WaveImages {
  private readonly urls = new Map<string, string>();
  private readonly pending = new Map<string, Promise<string>>();

  constructor(private readonly max = 512) {}

  /** The picture's URL when it is ready, or null. */
  get(key: string): string | null {
    const url = this.urls.get(key);
    if (url === undefined) return null;
    // least recently used goes first
    this.urls.delete(key);
    this.urls.set(key, url);
    return url;
  }

  /** Render (once) and return the picture's URL. */
  render(key: string, width: number, height: number, draw: (ctx: CanvasRenderingContext2D) => void): Promise<string> {
    const ready = this.get(key);
    if (ready) return Promise.resolve(ready);
    let p = this.pending.get(key);
    if (!p) {
      const canvas = document.createElement('canvas');
      canvas.width = Math.max(1, width);
      canvas.height = Math.max(1, height);
      const ctx = canvas.getContext('2d');
      if (!ctx) return Promise.reject(new Error('no 2d context'));
      draw(ctx);
      p = new Promise<string>((resolve, reject) => {
        canvas.toBlob((blob) => {
          this.pending.delete(key);
          if (!blob) {
            reject(new Error('waveform: no image'));
            return;
          }
          const url = URL.createObjectURL(blob);
          this.urls.set(key, url);
          this.evict();
          resolve(url);
        }, 'image/png');
      });
      this.pending.set(key, p);
    }
    return p;
  }

  destroy(): void {
    for (const url of this.urls.values()) URL.revokeObjectURL(url);
    this.urls.clear();
  }

  private evict(): void {
    while (this.urls.size > this.max) {
      const [oldest, url] = this.urls.entries().next().value ?? [];
      if (oldest === undefined || url === undefined) return;
      this.urls.delete(oldest);
      URL.revokeObjectURL(url);
    }
  }
}
