/**
 * The cluster benchmark's quick mode runs end to end — one, two and three real `archety start`
 * processes on one PostgreSQL and one Redis, the miniapp and relay generators, SIGKILLs of a
 * session's owner — and prints its table and the goals. Figures are not asserted: this proves
 * `npm run bench:cluster` still works. Redis is required (under CI a missing Redis fails).
 */
import { describe, expect, it } from 'vitest';
import { QUICK_BENCH_HANG_MS, runQuickBench } from '../helpers/bench.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { REDIS_URL, redisReachable } from '../helpers/redis.ts';

const ok = await redisReachable();

describe.skipIf(!ok)('bench:cluster --quick', () => {
  it(
    'runs every cluster size and the failover rounds, exits 0 and prints the table and the goals',
    async () => {
      const db = await createTestDatabase();
      const { code, output } = await runQuickBench('cluster.ts', {
        BENCH_DATABASE_URL: db.url,
        BENCH_REDIS_URL: REDIS_URL,
      });
      expect(code, output.slice(-3000)).toBe(0);
      expect(output).toMatch(/^\| processes \| ops forwarded \| miniapp ops\/s \(saturation\)/m);
      for (const n of [1, 2, 3]) expect(output).toMatch(new RegExp(`^\\| ${n} \\| \\d+% \\| [\\d,]+ \\|`, 'm'));
      expect(output).toMatch(/^- [✓✗] op → applied overhead of a socket on a non-owner process/m);
      expect(output).toMatch(/^- [✓✗] failover over 2 SIGKILLs of the owner under load: p50 [\d,]+ ms/m);
      expect(output).toMatch(/^- ✓ acknowledged ops lost over the kills: 0 of [\d,]+/m);
      expect(output).toMatch(/^- [✓✗] Redis calls per applied op on the owner path/m);
      expect(output).toMatch(/Miniapp op accounting .*sent [\d,]+ = applied [\d,]+ .* ✓/);
      expect(output).toMatch(/deleted \d+ Redis keys under archety_bench_/);
    },
    QUICK_BENCH_HANG_MS + 10_000,
  );
});
