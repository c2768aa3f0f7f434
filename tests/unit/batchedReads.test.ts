import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BatchedReads } from '../../src/store/BatchedReads.ts';

/** A reader that records its batches and answers once the test opens its gate. */
function recorder(answer: (q: number) => string = (q) => `r${q}`) {
  const batches: number[][] = [];
  const gates: (() => void)[] = [];
  const read = async (requests: number[]) => {
    batches.push(requests);
    await new Promise<void>((r) => gates.push(r));
    return requests.map(answer);
  };
  const open = () => {
    for (const g of gates.splice(0)) g();
  };
  return { batches, read, open };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('BatchedReads', () => {
  it('sends a lone request at once, and those that arrive while statements run together in the next', async () => {
    const r = recorder();
    const reads = new BatchedReads(r.read, { maxBatch: 10, inFlight: 1 });
    const first = reads.get(1);
    expect(r.batches).toEqual([[1]]);
    const rest = [2, 3, 4].map((q) => reads.get(q));
    expect(r.batches).toHaveLength(1);
    r.open();
    expect(await first).toBe('r1');
    await tick();
    expect(r.batches).toEqual([[1], [2, 3, 4]]);
    r.open();
    expect(await Promise.all(rest)).toEqual(['r2', 'r3', 'r4']);
  });

  it('keeps at most inFlight statements and maxBatch requests in each; every request gets its own answer', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 3 }),
        async (requests, maxBatch, inFlight) => {
          let running = 0;
          let most = 0;
          const sizes: number[] = [];
          const reads = new BatchedReads(
            async (qs: number[]) => {
              running++;
              most = Math.max(most, running);
              sizes.push(qs.length);
              await tick();
              running--;
              return qs.map((q) => q * 2);
            },
            { maxBatch, inFlight },
          );
          const answers = await Promise.all(requests.map((q) => reads.get(q)));
          expect(answers).toEqual(requests.map((q) => q * 2));
          expect(most).toBeLessThanOrEqual(inFlight);
          expect(Math.max(...sizes)).toBeLessThanOrEqual(maxBatch);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('fails the requests of a failed statement, and only those', async () => {
    let calls = 0;
    const reads = new BatchedReads(
      async (qs: number[]) => {
        calls++;
        await tick();
        if (calls === 1) throw new Error('connection reset');
        return qs.map(String);
      },
      { maxBatch: 10, inFlight: 1 },
    );
    const first = reads.get(1);
    const later = reads.get(2);
    await expect(first).rejects.toThrow('connection reset');
    expect(await later).toBe('2');
  });

  it('refuses a reader that answers a different number of results than requests', async () => {
    const reads = new BatchedReads(async (qs: number[]) => qs.slice(1), { maxBatch: 10, inFlight: 1 });
    await expect(reads.get(1)).rejects.toThrow(/answered 0 of 1/);
  });
});
