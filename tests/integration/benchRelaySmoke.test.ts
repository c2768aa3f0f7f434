/** `npm run bench:relay` and `bench:relay:ab` in their quick modes: the benchmarks themselves must keep working. */
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

describe('bench:relay:ab --quick', () => {
  it(
    'measures this checkout against itself in alternating rounds, exits 0 and prints the comparison',
    async () => {
      const { code, output } = await runQuickBench('relayAb.ts', {});
      expect(code, output.slice(-3000)).toBe(0);
      expect(output).toContain('| build | server CPU µs per request, median (rounds) | requests/s, median | p50 ms |');
      expect(output).toMatch(/\| base: this checkout \(again\) \| \d+\.\d \(/);
      expect(output).toMatch(/This checkout ÷ base: CPU per request \d+\.\d\d×, requests\/s \d+\.\d\d×/);
      // Both builds were measured in both rounds, on duplicates only (a new event would end the run).
      expect(output.match(/µs of server CPU per request/g)).toHaveLength(4);
      expect(output).not.toContain('were new in a round of duplicates');
    },
    QUICK_BENCH_HANG_MS,
  );

  it(
    'with --processing measures new events until every reply is delivered',
    async () => {
      const { code, output } = await runQuickBench('relayAb.ts', {}, '--processing', '--rounds', '1');
      expect(code, output.slice(-3000)).toBe(0);
      expect(output).toContain(
        '| build | server CPU µs per event, stored to replied, median (rounds) | events/s to the last reply, median | ack p50 ms |',
      );
      expect(output.match(/µs of server CPU per event \(stored, processed, replied\)/g)).toHaveLength(2);
      expect(output).toMatch(/1,000 new events per build per round over 100 conversations/);
    },
    QUICK_BENCH_HANG_MS,
  );

  it('prints its usage for --help, and refuses a --base that is neither a checkout nor a revision', () => {
    const help = runBenchOptions('relayAb.ts', '--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: npm run bench:relay:ab/);
    const wrong = runBenchOptions('relayAb.ts', '--base', 'no-such-revision-anywhere');
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toContain(
      '--base no-such-revision-anywhere: neither a directory holding a checkout nor a git revision',
    );
    expect(wrong.stdout).not.toContain('[bench:relay:ab]');
    const rounds = runBenchOptions('relayAb.ts', '--rounds', '0');
    expect(rounds.status).toBe(2);
    expect(rounds.stderr).toContain('--rounds must be an integer ≥ 1');
  });
});
