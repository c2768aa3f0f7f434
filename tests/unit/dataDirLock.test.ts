/**
 * The data directory's lock (`src/store/dataDirLock.ts`): one live process per DATA_DIR, a
 * dead holder's lock taken over, and of several processes racing for it exactly one wins.
 * Holders are real processes (children taking the lock through the module), killed with
 * SIGKILL to leave a lock behind as a crash would.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DataDirInUseError, lockDataDir, recordServerPort, shownDir } from '../../src/store/dataDirLock.ts';
import { onCleanup } from '../helpers/cleanup.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const lockModule = pathToFileURL(path.join(repoRoot, 'src/store/dataDirLock.ts')).href;

/** Takes the lock when told `go` on stdin (or at once), reports `won` or `lost <message>`, then stays until killed. */
const TAKER = `
import { createInterface } from 'node:readline';
const [modUrl, dir, mode] = process.argv.slice(2);
const { lockDataDir } = await import(modUrl);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
process.stdout.write('ready\\n');
if (mode === 'race') await lines.next();
try {
  const lock = await lockDataDir(dir, 'server');
  await lock.setPort(8123);
  process.stdout.write('won\\n');
} catch (err) {
  process.stdout.write('lost ' + err.message + '\\n');
}
setInterval(() => {}, 60_000);
`;

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'archety-lock-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Taker {
  child: ChildProcessWithoutNullStreams;
  pid: number;
  /** The next line the child prints. */
  line(): Promise<string>;
  kill(): Promise<void>;
}

async function taker(script: string, dataDir: string, mode: 'race' | 'now'): Promise<Taker> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, lockModule, dataDir, mode], { cwd: repoRoot });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  onCleanup(kill);
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const line = async () => {
    const next = await lines.next();
    if (next.done) throw new Error('the taker exited without a word');
    return next.value as string;
  };
  expect(await line()).toBe('ready');
  return { child, pid: child.pid as number, line, kill };
}

async function takerScript(): Promise<string> {
  const file = path.join(await tempDir(), 'taker.mjs');
  await writeFile(file, TAKER);
  return file;
}

const lockFile = (dir: string) => path.join(dir, 'archety.lock');
const lockPid = async (dir: string) => JSON.parse(await readFile(lockFile(dir), 'utf8')).pid as number;

describe('the data directory lock', () => {
  it('is taken in a fresh directory, refused to a second taker in the same process, and gone on release', async () => {
    const dir = path.join(await tempDir(), 'data');
    const lock = await lockDataDir(dir);
    expect(await lockPid(dir)).toBe(process.pid);
    await expect(lockDataDir(dir)).rejects.toThrow(
      `${dir} is in use by a server starting as pid ${process.pid}; stop it first or set DATA_DIR`,
    );
    await recordServerPort(dir, 8080);
    await expect(lockDataDir(dir)).rejects.toThrow(`running as pid ${process.pid} on port 8080`);
    lock.release();
    await expect(readFile(lockFile(dir))).rejects.toMatchObject({ code: 'ENOENT' });
    (await lockDataDir(dir)).release();
  });

  it('is refused while its holder lives, naming its pid and port, and left as it was', async () => {
    const dir = await tempDir();
    const holder = await taker(await takerScript(), dir, 'now');
    expect(await holder.line()).toBe('won');
    const before = await readFile(lockFile(dir), 'utf8');
    const err = await lockDataDir(dir).catch((e) => e);
    expect(err).toBeInstanceOf(DataDirInUseError);
    expect(err.message).toBe(
      `${dir} is in use by the server running as pid ${holder.pid} on port 8123; stop it first or set DATA_DIR`,
    );
    expect(await readFile(lockFile(dir), 'utf8')).toBe(before);
  });

  it('is taken over when its holder died without releasing it', async () => {
    const dir = await tempDir();
    const holder = await taker(await takerScript(), dir, 'now');
    expect(await holder.line()).toBe('won');
    await holder.kill();
    expect(await lockPid(dir)).toBe(holder.pid);
    const lock = await lockDataDir(dir);
    expect(await lockPid(dir)).toBe(process.pid);
    lock.release();
  });

  it('takes over a lock naming this pid that this process does not hold (a restarted container)', async () => {
    const dir = await tempDir();
    await writeFile(lockFile(dir), JSON.stringify({ pid: process.pid, owner: 'server', nonce: 'old', since: '' }));
    const lock = await lockDataDir(dir);
    expect(JSON.parse(await readFile(lockFile(dir), 'utf8')).nonce).not.toBe('old');
    lock.release();
  });

  it('treats an unreadable lock as held while it is fresh, and as dead once old', async () => {
    const dir = await tempDir();
    await writeFile(lockFile(dir), '');
    await expect(lockDataDir(dir)).rejects.toThrow(
      `${dir} is in use by another archety process that is starting; stop it first or set DATA_DIR`,
    );
    await writeFile(lockFile(dir), '{"pid": "nope"');
    const old = new Date(Date.now() - 60_000);
    await utimes(lockFile(dir), old, old);
    const lock = await lockDataDir(dir);
    expect(await lockPid(dir)).toBe(process.pid);
    lock.release();
  });

  it('names `archety migrate` when it holds the directory', async () => {
    const dir = await tempDir();
    await writeFile(lockFile(dir), JSON.stringify({ pid: process.ppid, owner: 'migrate', nonce: 'n', since: '' }));
    await expect(lockDataDir(dir)).rejects.toThrow(
      `${dir} is in use by \`archety migrate\` running as pid ${process.ppid}; wait for it to finish or set DATA_DIR`,
    );
  });

  it('never removes, on release, a lock another process has since taken', async () => {
    const dir = await tempDir();
    const lock = await lockDataDir(dir);
    const other = JSON.stringify({ pid: process.ppid, owner: 'server', nonce: 'theirs', since: '' });
    await writeFile(lockFile(dir), other);
    lock.release();
    expect(await readFile(lockFile(dir), 'utf8')).toBe(other);
  });

  for (const start of ['an empty directory', 'a dead holder’s lock'] as const) {
    it(`goes to exactly one of several processes racing for it from ${start}`, async () => {
      const dir = await tempDir();
      const script = await takerScript();
      if (start === 'a dead holder’s lock') {
        const dead = await taker(script, dir, 'now');
        expect(await dead.line()).toBe('won');
        await dead.kill();
      }
      const takers = await Promise.all(Array.from({ length: 5 }, () => taker(script, dir, 'race')));
      for (const t of takers) t.child.stdin.write('go\n');
      const results = await Promise.all(takers.map((t) => t.line()));
      const winners = takers.filter((_, i) => results[i] === 'won');
      expect(winners).toHaveLength(1);
      expect(await lockPid(dir)).toBe(winners[0].pid);
      for (const r of results.filter((r) => r !== 'won')) {
        expect(r).toMatch(
          new RegExp(`^lost .* is in use by (a server starting|the server running) as pid ${winners[0].pid}`),
        );
      }
    }, 30_000);
  }

  it('shows a directory under the current one relative to it, and any other absolute', () => {
    expect(shownDir(path.join(process.cwd(), '.data'))).toBe('./.data');
    expect(shownDir('/elsewhere/data')).toBe('/elsewhere/data');
  });
});
