/**
 * The miniapp benchmark's quick mode runs end to end (server, raw relay, load generators, the
 * PostgreSQL peer) and prints its summary table. Figures are not asserted: this only proves
 * the benchmark still works, so `npm run bench:miniapp` does not rot between real runs.
 */
import { describe, expect, it } from 'vitest';
import { QUICK_BENCH_HANG_MS, runBenchOptions, runQuickBench } from '../helpers/bench.ts';
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

  it('refuses a mistaken option with what is wrong and the usage, exit 2, no stack trace (miniapp, cluster, peers, sessions)', () => {
    for (const [script, args, message] of [
      ['miniapp.ts', ['--rounds', 'zero'], /--rounds must be an integer/],
      ['miniapp.ts', ['--server-node-flags', '--trace-gc'], /'--server-node-flags' argument is ambiguous/],
      ['cluster.ts', ['--no-such-option'], /Unknown option '--no-such-option'/],
      ['peers.ts', ['--no-such-option'], /Unknown option '--no-such-option'/],
      ['sessions.ts', ['--sessions', '0'], /--sessions must be an integer ≥ 1/],
    ] as const) {
      const run = runBenchOptions(script, ...args);
      expect(run.status, `${script} ${args.join(' ')}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toMatch(message);
      expect(run.stderr).toContain('Usage: npm run bench:');
      expect(run.stderr).not.toMatch(/^\s+at /m);
    }
  });
});

describe('bench:sessions --quick', () => {
  it('drives the session machine in memory, exits 0 and prints its CPU per op and live heap', () => {
    const run = runBenchOptions('sessions.ts', '--quick');
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/\| CPU per op \(`ops` \+ `committed` transitions; [\d,]+ ops measured\) \| [\d.]+ µs/);
    expect(run.stdout).toMatch(/\| heap live after a full GC \| [\d.]+ MiB \|/);
    // Every session's log holds its window, no more.
    expect(run.stdout).toContain('| logged ops held | 25,600 (256 per session) |');
  });
});
