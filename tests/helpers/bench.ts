/** Runs a benchmark script in quick mode, as its smoke test: the benchmark must keep working. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './server.ts';

/**
 * How long a quick run may take before it counts as hung. Not a speed check: quick runs take
 * 20–70 s on an idle 2-core machine and several times that on a busy one; the benchmarks' own
 * quick deadline (240 s) ends them first, with a message naming the phase.
 */
export const QUICK_BENCH_HANG_MS = 270_000;

/**
 * Runs `bench/<script>` with `--quick` (and `env` added) and resolves with its exit code and
 * everything it printed; rejects when it has not finished within QUICK_BENCH_HANG_MS.
 */
export function runQuickBench(
  script: string,
  env: Record<string, string>,
): Promise<{ code: number | null; output: string }> {
  const timeoutMs = QUICK_BENCH_HANG_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'bench', script), '--quick'], {
      cwd: repoRoot,
      env: { ...process.env, ...env },
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
      reject(new Error(`bench/${script} --quick did not finish within ${timeoutMs / 1000} s:\n${output.slice(-3000)}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
