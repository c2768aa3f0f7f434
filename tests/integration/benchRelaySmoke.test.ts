/** `npm run bench:relay` in its quick mode: the benchmark itself must keep working. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/server.ts';

const run = promisify(execFile);

describe('bench:relay --quick', () => {
  it('runs every phase, exits 0 and prints the summary table', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'bench/relay.ts', '--quick'], {
      cwd: repoRoot,
      env: { ...process.env, BENCH_QUICK: '1' },
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    expect(stdout).toContain('| metric | Archety | peer / limit | ratio | goal | met? |');
    for (const row of [
      'durable relay events/s at saturation',
      'ack latency p50 / p99',
      'end-to-end replies/s',
      'history query',
    ]) {
      expect(stdout).toContain(row);
    }
  }, 150_000);
});
