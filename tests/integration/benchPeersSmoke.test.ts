/**
 * The peers benchmark's quick mode runs end to end — Archety, the raw uWebSockets.js relay,
 * Socket.IO, Colyseus and Hocuspocus, each with its own client library — and prints its one
 * table. Figures are not asserted: this proves `npm run bench:peers` still works. The peers'
 * packages (bench/peers/package.json) are installed first when missing, never skipped: a failed
 * install fails here.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ensurePeersInstalled, PEERS_INSTALL_MS, QUICK_BENCH_HANG_MS, runQuickBench } from '../helpers/bench.ts';
import { createTestDatabase } from '../helpers/db.ts';

describe('bench:peers --quick', () => {
  beforeAll(ensurePeersInstalled, PEERS_INSTALL_MS);

  it(
    'runs every server through the quick comparison, exits 0 and prints the table and the goals',
    async () => {
      const db = await createTestDatabase();
      const { code, output } = await runQuickBench('peers.ts', { BENCH_DATABASE_URL: db.url });
      expect(code, output.slice(-3000)).toBe(0);
      expect(output).toMatch(/^\| server \| trip state kept \| saturated edits\/s/m);
      for (const row of ['Archety', 'raw uWebSockets.js \\(limit\\)', 'Socket.IO', 'Colyseus', 'Hocuspocus']) {
        expect(output).toMatch(new RegExp(`^\\| ${row} \\| .+\\|$`, 'm'));
      }
      expect(output).toMatch(/^- Archety ≥ 5× Socket\.IO's saturated edits\/s: .+×/m);
      expect(output).toMatch(/^- Archety ≥ 2× Hocuspocus's saturated edits\/s: .+×/m);
      expect(output).toMatch(/^- Archety ≥ 50% of raw uWebSockets\.js: /m);
      expect(output).toMatch(/^- Hocuspocus: sent [\d,]+ = applied [\d,]+ .* ✓/m);
      expect(output).toMatch(/Versions: .*socket\.io@\d.*@colyseus\/core@\d.*@hocuspocus\/server@\d/);
    },
    QUICK_BENCH_HANG_MS + 10_000,
  );
});
