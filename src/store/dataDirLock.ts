/**
 * One process at a time per `DATA_DIR`: the embedded PostgreSQL under it belongs to the
 * process holding `DATA_DIR/archety.lock`. Without it a second `archety start` on the same
 * directory took the first server's database for one "left running by an earlier process"
 * and stopped it under the live server.
 *
 * Guarantees:
 * - The lock is created atomically with its content (a hard link of a fully written file,
 *   which fails if the name exists): a reader never sees a half-written lock.
 * - A lock whose process is alive is never taken: the second taker fails with
 *   `DataDirInUseError`, naming the holder's pid and, once it listens, its port.
 * - A lock whose process is dead (a crash, `kill -9`) is taken over; of several processes
 *   finding the same dead lock, one removes it (under `archety.lock.takeover`, itself taken
 *   atomically, after reading the lock again) and the exclusive create decides who wins.
 * - A lock naming this process's own pid but not held by it is a previous incarnation's (a
 *   container restarted as pid 1): dead.
 * - Released on `release()` and, as a last resort, when the process exits.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, unlinkSync } from 'node:fs';
import { link, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export type LockOwner = 'server' | 'migrate';

/** What a lock file says about its holder. */
export interface LockHolder {
  pid: number;
  owner: LockOwner;
  /** The HTTP port, once the server listens. */
  port?: number;
}

export interface DataDirLock {
  readonly file: string;
  /** Records the port the server listens on, for the message a second start prints. */
  setPort(port: number): Promise<void>;
  /** Removes the lock if it is still this process's. Synchronous: it also runs on 'exit'. */
  release(): void;
}

const LOCK_FILE = 'archety.lock';
const TAKEOVER_FILE = 'archety.lock.takeover';
/** A lock without readable content (written by the non-atomic fallback) counts as live this long. */
const UNREADABLE_GRACE_MS = 5_000;
const ATTEMPTS = 100;

/** The data directory as the user named it: `./.data` under the current directory, else absolute. */
export function shownDir(dataDir: string): string {
  const rel = path.relative(process.cwd(), dataDir);
  if (rel === '') return '.';
  return rel.startsWith('..') || path.isAbsolute(rel) ? dataDir : `./${rel}`;
}

export class DataDirInUseError extends Error {
  readonly dataDir: string;
  readonly holder: LockHolder | undefined;

  constructor(dataDir: string, holder: LockHolder | undefined) {
    const dir = shownDir(dataDir);
    let by: string;
    let fix = 'stop it first or set DATA_DIR';
    if (!holder) by = 'another archety process that is starting';
    else if (holder.owner === 'migrate') {
      by = `\`archety migrate\` running as pid ${holder.pid}`;
      fix = 'wait for it to finish or set DATA_DIR';
    } else if (holder.port !== undefined) by = `the server running as pid ${holder.pid} on port ${holder.port}`;
    else by = `a server starting as pid ${holder.pid}`;
    super(`${dir} is in use by ${by}; ${fix}`);
    this.name = 'DataDirInUseError';
    this.dataDir = dataDir;
    this.holder = holder;
  }
}

interface LockContent extends LockHolder {
  nonce: string;
  since: string;
}

/** A lock file as read: its raw text (compared before removing it) and what it says, if readable. */
interface ReadLock {
  raw: string;
  content: LockContent | undefined;
  mtimeMs: number;
}

interface HeldLock {
  content: LockContent;
  handle: DataDirLock;
}

/** Locks this process holds, by file; `null` while being taken. */
const held = new Map<string, HeldLock | null>();

function parse(raw: string): LockContent | undefined {
  try {
    const c = JSON.parse(raw) as Partial<LockContent>;
    const ownerOk = c.owner === 'server' || c.owner === 'migrate';
    if (Number.isInteger(c.pid) && (c.pid as number) > 0 && ownerOk && typeof c.nonce === 'string') {
      return c as LockContent;
    }
  } catch {
    // unreadable: handled by the caller
  }
  return undefined;
}

async function readLock(file: string): Promise<ReadLock | undefined> {
  try {
    const [raw, st] = await Promise.all([readFile(file, 'utf8'), stat(file)]);
    return { raw, content: parse(raw), mtimeMs: st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** True while `pid` runs (EPERM: it runs as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isLive(lock: ReadLock): boolean {
  if (!lock.content) return Date.now() - lock.mtimeMs < UNREADABLE_GRACE_MS;
  // Our own pid in a lock we do not hold: a previous process that had the same pid.
  if (lock.content.pid === process.pid) return false;
  return processAlive(lock.content.pid);
}

/** Creates `file` with `text` unless it exists; false if it does. */
async function createExclusive(file: string, text: string): Promise<boolean> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  try {
    await link(tmp, file);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    // File systems without hard links: an exclusive create, briefly empty (see UNREADABLE_GRACE_MS).
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'ENOSYS' || code === 'EOPNOTSUPP') {
      try {
        await writeFile(file, text, { flag: 'wx', mode: 0o644 });
        return true;
      } catch (again) {
        if ((again as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw again;
      }
    }
    throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

/**
 * Removes the dead lock `stale`, if it is still the one there. Only the holder of the
 * takeover file removes anything, after reading the lock again, so a lock created meanwhile
 * by another taker is never removed. A takeover file left by a process that died holding it
 * (a window of milliseconds) is removed in turn.
 */
async function removeStale(dataDir: string, file: string, stale: ReadLock): Promise<void> {
  const takeover = path.join(dataDir, TAKEOVER_FILE);
  const mine = JSON.stringify({ pid: process.pid, owner: 'server', nonce: randomBytes(8).toString('hex') });
  if (!(await createExclusive(takeover, mine))) {
    const other = await readLock(takeover);
    if (other && !isLive(other)) await unlink(takeover).catch(() => {});
    else await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
    return;
  }
  try {
    const again = await readLock(file);
    if (again && again.raw === stale.raw) await unlink(file).catch(() => {});
  } finally {
    await unlink(takeover).catch(() => {});
  }
}

/**
 * Takes `dataDir`'s lock for this process, creating the directory if needed.
 * Throws `DataDirInUseError` while another live process holds it.
 */
export async function lockDataDir(dataDir: string, owner: LockOwner = 'server'): Promise<DataDirLock> {
  const file = path.join(dataDir, LOCK_FILE);
  if (held.has(file)) {
    const mine = held.get(file);
    throw new DataDirInUseError(dataDir, mine ? holderOf(mine.content) : { pid: process.pid, owner });
  }
  held.set(file, null);
  try {
    await mkdir(dataDir, { recursive: true });
    const content: LockContent = {
      pid: process.pid,
      owner,
      nonce: randomBytes(8).toString('hex'),
      since: new Date().toISOString(),
    };
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (await createExclusive(file, JSON.stringify(content))) return holdLock(file, content);
      const current = await readLock(file);
      if (!current) continue; // released meanwhile: try again
      if (isLive(current)) throw new DataDirInUseError(dataDir, current.content && holderOf(current.content));
      await removeStale(dataDir, file, current);
    }
    throw new Error(`could not take the lock ${file}: other processes keep taking it`);
  } catch (err) {
    held.delete(file);
    throw err;
  }
}

function holderOf(c: LockContent): LockHolder {
  return { pid: c.pid, owner: c.owner, ...(c.port !== undefined ? { port: c.port } : {}) };
}

function holdLock(file: string, initial: LockContent): DataDirLock {
  // Assigned once the handle, which closes over it, exists.
  let entry: HeldLock;
  const release = () => {
    if (held.get(file) !== entry) return;
    held.delete(file);
    process.removeListener('exit', release);
    try {
      // Only our own lock: never one a later process took over.
      if (parse(readFileSync(file, 'utf8'))?.nonce === initial.nonce) unlinkSync(file);
    } catch {
      // already gone
    }
  };
  const handle: DataDirLock = {
    file,
    async setPort(port) {
      if (held.get(file) !== entry) return;
      entry.content = { ...entry.content, port };
      // Replaced atomically: a reader sees the old content or the new, never a partial one.
      const tmp = `${file}.${process.pid}.port.tmp`;
      await writeFile(tmp, JSON.stringify(entry.content), { mode: 0o644 });
      await rename(tmp, file);
    },
    release,
  };
  entry = { content: initial, handle };
  held.set(file, entry);
  process.once('exit', release);
  return handle;
}

/** Records the port of the server holding `dataDir`'s lock in this process (no-op otherwise). */
export async function recordServerPort(dataDir: string, port: number): Promise<void> {
  await held.get(path.join(dataDir, LOCK_FILE))?.handle.setPort(port);
}
