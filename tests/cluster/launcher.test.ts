/**
 * `npm run cluster`: the local cluster launcher, run as a person runs it, against the test
 * database and Redis.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { SEMI_SPACE_MIB } from '../../src/observability/gcThreads.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { consecutiveFreePorts } from '../helpers/cluster.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { REDIS_URL, redisReachable, testPrefix } from '../helpers/redis.ts';
import { baseEnv, processAlive, repoRoot } from '../helpers/server.ts';

const ok = await redisReachable();

interface Launcher {
  child: ChildProcess;
  output: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * `npm run --silent cluster -- <args>` in a process group of its own, so that the cleanup
 * after a failed test reaches npm, the launcher and every node at once.
 */
function runLauncher(args: string[], env: Record<string, string> = {}, nodeFlags: string[] = []): Launcher {
  // With Node flags, `node <flags> bin/archety.js cluster` (npm run cannot pass them to node).
  const [file, argv] = nodeFlags.length
    ? [process.execPath, [...nodeFlags, 'bin/archety.js', 'cluster', ...args]]
    : ['npm', ['run', '--silent', 'cluster', '--', ...args]];
  const child = spawn(file, argv, {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  onCleanup(() => killGroup(child));
  return { child, output: () => out + err, stderr: () => err, exited };
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // The group is gone: everything in it has exited.
  }
}

describe.skipIf(!ok)('npm run cluster -- --nodes 2', () => {
  let launcher: Launcher;
  let port: number;
  const nodes: { id: string; url: string; pid: number }[] = [];

  beforeAll(async () => {
    const db = await createTestDatabase();
    port = await consecutiveFreePorts(2);
    launcher = runLauncher(
      ['--nodes', '2', '--port', String(port)],
      baseEnv(db.url, { REDIS_URL, REDIS_PREFIX: testPrefix() }),
    );
    await vi.waitFor(
      () => {
        if (!/archety cluster: 2 nodes listening/.test(launcher.output())) {
          throw new Error(`the nodes are not listening yet:\n${launcher.output()}`);
        }
      },
      { timeout: 45_000, interval: 100 },
    );
    for (const id of ['node-1', 'node-2']) {
      const m = new RegExp(`^${id} listening on (\\S+) \\(pid (\\d+), mode \\w+\\)$`, 'm').exec(launcher.output());
      if (!m) throw new Error(`no listening line for ${id}:\n${launcher.output()}`);
      nodes.push({ id, url: m[1], pid: Number(m[2]) });
    }
  });

  it('starts one process per node on consecutive ports, each answering /health, and /ready with its node id in cluster mode', async () => {
    expect(nodes.map((n) => new URL(n.url).port)).toEqual([String(port), String(port + 1)]);
    for (const node of nodes) {
      const health = await fetch(`${node.url}/health`);
      expect(health.status, node.id).toBe(200);
      const ready = await fetch(`${node.url}/ready`);
      expect(ready.status, node.id).toBe(200);
      expect(await ready.json(), node.id).toMatchObject({ node: node.id, mode: 'cluster' });
    }
  });

  it('starts its nodes with V8’s default garbage collector threads and the young generation of `npm run cluster`', () => {
    for (const node of nodes) {
      expect(commandLine(node.pid), node.id).not.toContain('--single-threaded-gc');
      expect(commandLine(node.pid), node.id).toContain(`--max-semi-space-size=${SEMI_SPACE_MIB}`);
    }
  });

  it('stops every node and exits 0 on SIGTERM', async () => {
    const pid = /archety cluster \(pid (\d+)\)/.exec(launcher.output())?.[1];
    expect(pid, launcher.output()).toBeDefined();
    process.kill(Number(pid), 'SIGTERM');
    expect(await launcher.exited, launcher.output()).toEqual({ code: 0, signal: null });
    expect(launcher.output()).toMatch(/archety cluster: SIGTERM: stopping 2 processes/);
    for (const node of nodes) expect(processAlive(node.pid), node.id).toBe(false);
  });
});

/** The arguments a running process was started with. */
const commandLine = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);

describe.skipIf(!ok)('node --single-threaded-gc bin/archety.js cluster --nodes 1', () => {
  it('starts its node with the same garbage collector flag', async () => {
    const db = await createTestDatabase();
    const port = await consecutiveFreePorts(1);
    const launcher = runLauncher(
      ['--nodes', '1', '--port', String(port)],
      baseEnv(db.url, { REDIS_URL, REDIS_PREFIX: testPrefix() }),
      ['--single-threaded-gc'],
    );
    await vi.waitFor(
      () => {
        if (!/archety cluster: 1 node(s)? listening/.test(launcher.output())) {
          throw new Error(`the node is not listening yet:\n${launcher.output()}`);
        }
      },
      { timeout: 45_000, interval: 100 },
    );
    const pid = Number(/^node-1 listening on \S+ \(pid (\d+)/m.exec(launcher.output())?.[1]);
    expect(commandLine(pid)).toContain('--single-threaded-gc');
    // Started without one, it gives its node no young-generation size: V8's default, as its own.
    expect(commandLine(pid).some((a) => a.startsWith('--max-semi-space-size'))).toBe(false);
    launcher.child.kill('SIGTERM');
    expect(await launcher.exited, launcher.output()).toEqual({ code: 0, signal: null });
  });
});

describe('npm run cluster with bad flags', () => {
  it.each([
    [['--nodes', '0'], /^archety cluster: --nodes must be a whole number from 1 to \d+, not "0"/],
    [['--frobnicate'], /^archety cluster: unknown option --frobnicate/],
  ])('refuses %j in one line with exit code 2', async (args, line) => {
    const launcher = runLauncher(args);
    expect(await launcher.exited).toEqual({ code: 2, signal: null });
    expect(launcher.stderr()).toMatch(line);
    expect(launcher.stderr().trimEnd().split('\n')).toHaveLength(1);
  });
});
