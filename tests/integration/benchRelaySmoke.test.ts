/** `npm run bench:relay` in its quick mode: the benchmark itself must keep working. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, inject, it, vi } from 'vitest';
import { QUICK_BENCH_HANG_MS, runBenchOptions, runQuickBench } from '../helpers/bench.ts';
import { processAlive, repoRoot } from '../helpers/server.ts';

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

describe('bench:relay interrupted', () => {
  it(
    'on SIGINT stops its server, drops its database and exits 130',
    async () => {
      const admin = inject('pgAdminUrl');
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'bench/relay.ts'), '--quick'], {
        cwd: repoRoot,
        env: { ...process.env, BENCH_PG_ADMIN_URL: admin },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (c) => {
        out += c;
      });
      child.stderr.on('data', (c) => {
        out += c;
      });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const started = /server http:\/\/\S+ \(pid (\d+)\), database (\w+)/;
      await vi.waitFor(
        () => {
          if (!started.test(out)) throw new Error(`the benchmark's server is not up yet:\n${out}`);
        },
        { timeout: 60_000, interval: 100 },
      );
      const [, pid, database] = started.exec(out) as RegExpExecArray;
      child.kill('SIGINT');
      expect(await exited, out).toBe(130);
      expect(out).toContain('SIGINT: stopping the server and dropping the benchmark database');
      expect(processAlive(Number(pid))).toBe(false);
      const client = new pg.Client({ connectionString: admin });
      await client.connect();
      const { rows } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
      await client.end();
      expect(rows).toEqual([]);
    },
    QUICK_BENCH_HANG_MS,
  );
});
