import { describe, expect, it } from 'vitest';
import { BUSY, batchFor, CALM, nextWindow, QUICK_MS, SLOW_MS } from '../../src/relay/processingShare.ts';

const slow = { max: 256, storeMs: SLOW_MS + 5, busy: 0.5, requests: 10, waiting: 100 };
const busy = { max: 256, storeMs: 1, busy: BUSY + 0.05, requests: 10, waiting: 100 };

describe('the processing window (processingShare.ts)', () => {
  it('halves while storing is slow, events wait and requests keep coming, down to a 32nd of the maximum', () => {
    let limit = 256;
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) {
      limit = nextWindow({ ...slow, limit });
      seen.push(limit);
    }
    expect(seen).toEqual([128, 64, 32, 16, 8, 8, 8, 8, 8, 8]);
  });

  it('halves the same way while the event loop is busy, however quick storing is', () => {
    let limit = 256;
    for (let i = 0; i < 10; i++) limit = nextWindow({ ...busy, limit });
    expect(limit).toBe(8);
    expect(nextWindow({ ...busy, limit: 64, busy: 1 })).toBe(32);
  });

  it('never goes below one', () => {
    expect(nextWindow({ ...slow, max: 4, limit: 1 })).toBe(1);
  });

  it('doubles back while storing is quick and the loop has room', () => {
    expect(nextWindow({ ...slow, limit: 8, storeMs: QUICK_MS - 1 })).toBe(16);
    expect(nextWindow({ ...busy, limit: 8, busy: CALM - 0.01 })).toBe(16);
    expect(nextWindow({ ...busy, limit: 200, busy: CALM - 0.01 })).toBe(256);
  });

  it('takes the whole window at once when no request came or nothing waits', () => {
    expect(nextWindow({ ...busy, limit: 8, requests: 0 })).toBe(256);
    expect(nextWindow({ ...busy, limit: 8, waiting: 0 })).toBe(256);
    expect(nextWindow({ ...slow, limit: 8, requests: 0 })).toBe(256);
    expect(nextWindow({ ...slow, limit: 8, waiting: 0 })).toBe(256);
  });

  it('holds between the two thresholds', () => {
    expect(nextWindow({ ...slow, limit: 32, storeMs: (SLOW_MS + QUICK_MS) / 2 })).toBe(32);
    expect(nextWindow({ ...busy, limit: 32, busy: (BUSY + CALM) / 2 })).toBe(32);
    // Storing quick but the loop between its thresholds, or the loop calm but storing not quick: hold.
    expect(nextWindow({ ...slow, limit: 32, storeMs: QUICK_MS - 1, busy: (BUSY + CALM) / 2 })).toBe(32);
    expect(nextWindow({ ...slow, limit: 32, storeMs: (SLOW_MS + QUICK_MS) / 2, busy: 0 })).toBe(32);
  });

  it('leaves the full window alone without a backlog, however slow storing is', () => {
    expect(nextWindow({ ...slow, limit: 256, waiting: 0, storeMs: 1000, busy: 1 })).toBe(256);
  });

  it('hands whole batches with the whole window, smaller ones as it shrinks, never less than one event', () => {
    expect(batchFor(16, 256, 256)).toBe(16);
    expect(batchFor(16, 128, 256)).toBe(8);
    expect(batchFor(16, 32, 256)).toBe(2);
    expect(batchFor(16, 8, 256)).toBe(1);
    expect(batchFor(1, 256, 256)).toBe(1);
    expect(batchFor(16, 1, 1)).toBe(16);
    // Halving and doubling back: the batch follows the window both ways.
    let limit = 256;
    const sizes: number[] = [];
    for (let i = 0; i < 6; i++) {
      limit = nextWindow({ ...busy, limit });
      sizes.push(batchFor(16, limit, 256));
    }
    limit = nextWindow({ ...busy, limit, requests: 0 });
    sizes.push(batchFor(16, limit, 256));
    expect(sizes).toEqual([8, 4, 2, 1, 1, 1, 16]);
  });
});
