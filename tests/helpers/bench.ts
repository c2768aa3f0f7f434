/**
 * Runs a benchmark script in quick mode, as its smoke test: the benchmark must keep working.
 * The peers benchmark's packages are installed apart (bench/peers/package.json); its smoke test
 * installs them first when a fresh clone has not.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './server.ts';

/**
 * How long a quick run may take before it counts as hung. Not a speed check: quick runs take
 * 20–70 s on an idle 2-core machine and several times that on a busy one; the benchmarks' own
 * quick deadline (240 s) ends them first, with a message naming the phase.
 */
export const QUICK_BENCH_HANG_MS = 270_000;

/** How long installing the peers' packages may take: about 125 packages from the registry. */
export const PEERS_INSTALL_MS = 180_000;

interface Finished {
  code: number | null;
  output: string;
}

/**
 * Runs `bench/<script>` with `--quick` and `extra` arguments (and `env` added) and resolves with
 * its exit code and everything it printed; rejects when it has not finished within QUICK_BENCH_HANG_MS.
 */
export function runQuickBench(script: string, env: Record<string, string>, ...extra: string[]): Promise<Finished> {
  const args = ['--import', 'tsx', path.join(repoRoot, 'bench', script), '--quick', ...extra];
  return run(process.execPath, args, { ...process.env, ...env }, QUICK_BENCH_HANG_MS);
}

/** Runs `bench/<script>` with `args` to its end (for options that end it at once: --help, mistakes). */
export function runBenchOptions(
  script: string,
  ...args: string[]
): { status: number | null; stdout: string; stderr: string } {
  const { status, stdout, stderr } = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(repoRoot, 'bench', script), ...args],
    {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  return { status, stdout, stderr };
}

/**
 * Installs the peers benchmark's own packages (bench/peers/package.json, apart from the root's
 * because several declare Node ≥ 22) when they are not installed, as on a fresh clone: the
 * smoke test proves every peer runs, so it installs them rather than skip, and a failed install
 * rejects with npm's output.
 */
export async function ensurePeersInstalled(): Promise<void> {
  // npm writes its hidden lockfile last, so it is there only after a finished install.
  if (existsSync(path.join(repoRoot, 'bench/peers/node_modules/.package-lock.json'))) return;
  const args = ['ci', '--prefix', 'bench/peers', '--no-audit', '--no-fund'];
  console.warn(`\n*** bench/peers/node_modules is not installed: running npm ${args.join(' ')} ***\n`);
  const { code, output } = await run('npm', args, process.env, PEERS_INSTALL_MS);
  if (code !== 0) throw new Error(`npm ${args.join(' ')} exited with ${code}:\n${output.slice(-3000)}`);
}

/** Runs `command` in the repository root; resolves with its exit code and all it printed. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c) => {
      output += c;
    });
    child.stderr.on('data', (c) => {
      output += c;
    });
    const timer = setTimeout(() => {
      child.kill('SIGINT');
      reject(
        new Error(`${command} ${args.join(' ')} did not finish within ${timeoutMs / 1000} s:\n${output.slice(-3000)}`),
      );
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
