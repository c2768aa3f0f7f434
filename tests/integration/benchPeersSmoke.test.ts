/**
 * The peers benchmark's quick mode runs end to end — Archety, the raw uWebSockets.js relay,
 * Socket.IO, Colyseus and Hocuspocus, each with its own client library — and prints its one
 * table. Figures are not asserted: this proves `npm run bench:peers` still works (and that
 * every peer is installed: a missing one fails here, it is never skipped).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.ts';
import { repoRoot } from '../helpers/server.ts';

describe('bench:peers --quick', () => {
  it('runs every server through the quick comparison, exits 0 and prints the table and the goals', async () => {
    const db = await createTestDatabase();
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'bench/peers.ts'), '--quick'], {
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
        reject(new Error(`the quick peers benchmark did not finish within 85 s:\n${output.slice(-3000)}`));
      }, 85_000);
      child.on('error', reject);
      child.on('exit', (exitCode) => {
        clearTimeout(timer);
        resolve({ code: exitCode, output });
      });
    });
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
  }, 90_000);
});
