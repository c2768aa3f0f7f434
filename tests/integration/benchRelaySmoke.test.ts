/** `npm run bench:relay` in its quick mode: the benchmark itself must keep working. */
import { describe, expect, it } from 'vitest';
import { QUICK_BENCH_HANG_MS, runBenchOptions, runQuickBench } from '../helpers/bench.ts';

describe('bench:relay --quick', () => {
  it(
    'runs every phase, exits 0 and prints the summary table',
    async () => {
      const { code, output: stdout } = await runQuickBench('relay.ts', {});
      expect(code, stdout.slice(-3000)).toBe(0);
      expect(stdout).toContain('| metric | Archety | peer / limit | ratio | goal | met? |');
      for (const row of [
        'durable relay events/s at saturation',
        'ack latency p50 / p99',
        'end-to-end replies/s',
        'history query',
      ]) {
        expect(stdout).toContain(row);
      }
    },
    QUICK_BENCH_HANG_MS + 10_000,
  );

  it('prints its usage for --help and refuses an unknown option, running nothing', () => {
    const help = runBenchOptions('relay.ts', '--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: npm run bench:relay/);
    expect(help.stdout).toContain('--no-readme');
    expect(help.stdout).not.toContain('[bench:relay]');
    const wrong = runBenchOptions('relay.ts', '--rounds', '1');
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/Unknown option '--rounds'/);
    expect(wrong.stderr).toContain('Usage: npm run bench:relay');
    expect(wrong.stdout).not.toContain('[bench:relay]');
  });
});
