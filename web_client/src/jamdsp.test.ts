import { describe, expect, it } from 'vitest';

import { PlayoutFifo, Reblocker } from './jamdsp';

describe('Reblocker', () => {
  it('turns 128-frame quanta into 120-sample blocks without losing or reordering a sample', () => {
    const r = new Reblocker(120);
    const out: number[] = [];
    let blocks = 0;
    let n = 0;
    for (let q = 0; q < 15; q += 1) {
      const quantum = new Float32Array(128);
      for (let i = 0; i < 128; i += 1) quantum[i] = n++;
      for (const b of r.push(quantum)) {
        expect(b.length).toBe(120);
        blocks += 1;
        out.push(...b);
      }
    }
    // 15 × 128 = 1920 = 16 × 120
    expect(blocks).toBe(16);
    expect(r.pending).toBe(0);
    expect(out).toEqual(Array.from({ length: 1920 }, (_, i) => i));
  });

  it('keeps the remainder for the next push', () => {
    const r = new Reblocker(120);
    expect(r.push(new Float32Array(128))).toHaveLength(1);
    expect(r.pending).toBe(8);
    expect(r.push(new Float32Array(100))).toHaveLength(0);
    expect(r.pending).toBe(108);
    expect(r.push(new Float32Array(12))).toHaveLength(1);
    expect(r.pending).toBe(0);
  });

  it('handles stereo interleaved input', () => {
    const r = new Reblocker(120, 2);
    const blocks = r.push(new Float32Array(256).map((_, i) => i));
    expect(blocks).toHaveLength(1);
    expect(blocks[0]!.length).toBe(240);
    expect(r.pending).toBe(8);
  });
});

describe('PlayoutFifo', () => {
  const block = (v: number): Float32Array => new Float32Array(240).fill(v);

  it('waits for the target depth, then plays in order', () => {
    const f = new PlayoutFifo(120, 2, 2);
    const out = new Float32Array(256);
    f.push(block(1));
    f.pull(out);
    expect(out.every((x) => x === 0)).toBe(true); // still prefetching
    f.push(block(2));
    f.pull(out);
    expect(out[0]).toBe(1);
    expect(out[239]).toBe(1);
    expect(out[240]).toBe(2);
    expect(f.stats().queued).toBe(240 - 128);
  });

  it('counts an underrun, fills silence and prefetches again', () => {
    const f = new PlayoutFifo(120, 2, 1);
    const out = new Float32Array(256);
    f.push(block(0.5));
    f.pull(out);
    expect(out[239]).toBe(0.5);
    expect(out[240]).toBe(0);
    expect(f.stats().underruns).toBe(1);
    f.pull(out);
    expect(f.stats().underruns).toBe(1); // not playing: prefetching, no new underrun
  });

  it('drains a backlog down to the target after a while', () => {
    const f = new PlayoutFifo(120, 2, 2);
    for (let i = 0; i < 40; i += 1) f.push(block(i)); // a burst after a stall: 100 ms queued
    const out = new Float32Array(256);
    // then audio keeps arriving exactly as fast as it plays: only dropping can shrink the queue
    let produced = 0;
    for (let q = 1; q <= 150; q += 1) {
      f.pull(out);
      while (produced + 120 <= q * 128) {
        f.push(block(0));
        produced += 120;
      }
    }
    expect(f.stats().dropped).toBeGreaterThan(0);
    expect(f.stats().queued).toBeLessThanOrEqual(4 * 120);
    expect(f.stats().underruns).toBe(0);
  });
});
