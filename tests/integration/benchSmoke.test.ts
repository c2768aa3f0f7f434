/**
 * The miniapp benchmark's quick mode runs end to end (server, raw relay, load generators, the
 * PostgreSQL peer) and prints its summary table. Figures are not asserted: this only proves
 * the benchmark still works, so `npm run bench:miniapp` does not rot between real runs.
 */
import { describe, expect, it } from 'vitest';
import { QUICK_BENCH_HANG_MS, runQuickBench } from '../helpers/bench.ts';
import { createTestDatabase } from '../helpers/db.ts';

describe('bench:miniapp --quick', () => {
  it(
    'runs the whole benchmark in quick mode, exits 0 and prints the summary table',
    async () => {
      const db = await createTestDatabase();
      const { code, output } = await runQuickBench('miniapp.ts', { BENCH_DATABASE_URL: db.url });
      expect(code, output.slice(-3000)).toBe(0);
      expect(output).toContain('| metric | Archety | peer / limit | ratio | goal | met? |');
      expect(output).toMatch(/\| Durable applied ops\/s at saturation .*\| PostgreSQL single-row commits/);
      expect(output).toMatch(/\| Fan-out frames\/s delivered .*\| raw uWS relay/);
      expect(output).toMatch(/\| JWT-authenticated upgrades\/s/);
      expect(output).toMatch(/Machine: .+cores, Node v\d+.+PostgreSQL \d+/);
      expect(output).toMatch(
        /Op accounting .*sent [\d,]+ = applied [\d,]+ \+ conflict [\d,]+ \+ error [\d,]+ \+ in flight [\d,]+ ✓/,
      );
    },
    QUICK_BENCH_HANG_MS + 10_000,
  );
});
