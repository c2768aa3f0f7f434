/**
 * The miniapp benchmark's quick mode runs end to end (server, raw relay, load generators, the
 * PostgreSQL peer) and prints its summary table. Figures are not asserted: this only proves
 * the benchmark still works, so `npm run bench:miniapp` does not rot between real runs.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.ts';
import { repoRoot } from '../helpers/server.ts';

describe('bench:miniapp --quick', () => {
  it('runs the whole benchmark in quick mode, exits 0 and prints the summary table', async () => {
    const db = await createTestDatabase();
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'bench/miniapp.ts'), '--quick'], {
        cwd: repoRoot,
        env: { ...process.env, BENCH_DATABASE_URL: db.url },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (c) => {
        output += c;
      });
      child.stderr.on('data', (c) => {
        output += c;
      });
      const timer = setTimeout(() => {
        child.kill('SIGINT');
        reject(new Error(`the quick benchmark did not finish within 55 s:\n${output.slice(-3000)}`));
      }, 55_000);
      child.on('error', reject);
      child.on('exit', (exitCode) => {
        clearTimeout(timer);
        resolve({ code: exitCode, output });
      });
    });
    expect(code, output.slice(-3000)).toBe(0);
    expect(output).toContain('| metric | Archety | peer / limit | ratio | goal | met? |');
    expect(output).toMatch(/\| Durable applied ops\/s at saturation .*\| PostgreSQL single-row commits/);
    expect(output).toMatch(/\| Fan-out frames\/s delivered .*\| raw uWS relay/);
    expect(output).toMatch(/\| JWT-authenticated upgrades\/s/);
    expect(output).toMatch(/Machine: .+cores, Node v\d+.+PostgreSQL \d+/);
    expect(output).toMatch(
      /Op accounting .*sent [\d,]+ = applied [\d,]+ \+ conflict [\d,]+ \+ error [\d,]+ \+ in flight [\d,]+ ✓/,
    );
  }, 60_000);
});
