/**
 * Group commit: writes submitted by every actor are committed together, one transaction per
 * turn, with multi-row statements per kind, so durable throughput is not one commit per op.
 *
 * Writes go to one of `lanes` lanes (GROUP_COMMIT_LANES, one by default), each with its own
 * connection and one transaction in flight: an actor's writes always take the same lane (by
 * its key), unfenced writes the least busy one, or their kind's own lane (see `register`).
 * With several lanes, transactions commit at once — PostgreSQL works on them in parallel and
 * flushes their WAL together. A transaction
 * takes at most GROUP_COMMIT_MAX_BATCH writes and GROUP_COMMIT_MAX_BYTES of them (their JSON
 * size; a larger write goes alone). Small commits of paced kinds (miniapp ops) while more keep
 * arriving are spaced GROUP_COMMIT_INTERVAL_MS apart (`intervalMs`).
 *
 * Guarantees:
 * - Per actor, writes are committed in submission order (its lane: one transaction in flight, FIFO).
 * - Every transaction first checks each actor's epoch in `actor_leases` (`FOR SHARE`, so a
 *   concurrent activation waits for the commit); writes of an actor whose epoch moved on are
 *   not written and fail with `FencedError`. A kind whose writer fences itself in its one
 *   statement (the conversations', the miniapp ops') commits a batch of only its writes as that
 *   statement alone.
 * - A bad write fails alone. When a writer's statement fails on what it was given (anything
 *   but a connection error), the transaction is rolled back and done again carefully: each
 *   kind under a savepoint, and a kind that fails on its data (SQLSTATE classes 22 and 23, or
 *   an error thrown by the writer's own code) is retried in halves under savepoints until the
 *   writes that fail are found; those fail, every other write of the tick commits. The
 *   careful pass costs nothing while no write fails.
 * - Once a write of an actor fails, its later writes fail too (until it is re-activated with
 *   a new epoch), so what is stored is always a prefix of what the actor submitted: its
 *   writes after a refused one in the same transaction are refused with it.
 * - A transaction that failed on a connection error is retried on a new connection; writers
 *   must therefore be idempotent (`ON CONFLICT DO NOTHING`, monotonic updates), and must
 *   give the same result for a batch written whole or in parts.
 */
import pg from 'pg';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { byKind, type Pending, writeCarefully } from './carefulWrite.ts';
import type { Pool, PoolClient } from './pool.ts';
import { isConnectionError, translatePgError } from './translatePgError.ts';

const { escapeLiteral } = pg;

/**
 * Writes a batch of one kind's items inside the group transaction. Must be idempotent. It may
 * return one result per item (in order), which its `submit` resolves with. `fence` is given
 * only to writers registered as fencing themselves (see `register`), and only when they run
 * outside a fenced transaction: the writer then writes no item whose actor's epoch moved on,
 * and returns `FENCED` for it.
 */
export type BatchWriter<T> = (
  client: PoolClient,
  items: T[],
  fence: Fence | null,
  // biome-ignore lint/suspicious/noConfusingVoidType: writers without results are plain async functions.
) => Promise<unknown[] | void>;

/**
 * The epochs a self-fencing writer holds its items to, one per item in order: the item's
 * actor key (its `actor_leases` key) and the epoch it was submitted with.
 */
export interface Fence {
  keys: string[];
  epochs: number[];
}

/** A self-fencing writer's result for an item whose actor's epoch moved on: it fails with `FencedError`. */
export const FENCED = Symbol('fenced');

export class FencedError extends Error {
  constructor(readonly actorKey: string) {
    super(`actor ${actorKey} was taken over by another owner`);
    this.name = 'FencedError';
  }
}

export interface GroupCommitterOptions {
  maxBatch: number;
  /** Most bytes (the items' JSON size) in one transaction; a larger item goes alone. */
  maxBytes: number;
  attempts: number;
  /** Transactions that may be in flight at once (≥ 1). */
  lanes: number;
  /**
   * Least time between the starts of a lane's commits of paced kinds (see `register`), in ms
   * (0: none). Under light load from many writers every write would otherwise be a commit of
   * its own, each paying a round trip, a wake-up of PostgreSQL and a WAL flush: when writes
   * arrived while the last commit ran and it was small (fewer than PACE_BELOW writes), and
   * every write now queued is of a paced kind, the next commit waits out the rest of the
   * interval, gathering those that arrive meanwhile. A lane whose queue was empty when its
   * commit came back (a lone writer waiting for its answer) commits the next write at once;
   * commits that take longer than the interval never wait.
   */
  intervalMs?: number;
  log: Logger;
  metrics?: Metrics;
}

interface Lane {
  queue: Pending[];
  running: boolean;
  /**
   * The lane's own connection, kept between transactions: waiting for a pool connection
   * behind the actors' reads (a burst of activations) would stall every write of the lane,
   * and fail them once PG_CONNECTION_TIMEOUT_MS passed.
   */
  client: PoolClient | null;
  /** When (performance.now()) its last commit started. */
  started: number;
  /** Its next commit waits out `intervalMs` (see the option). */
  gather: boolean;
}

const newLane = (): Lane => ({
  queue: [],
  running: false,
  client: null,
  started: Number.NEGATIVE_INFINITY,
  gather: false,
});

/**
 * A commit of at least this many writes already spreads its round trip and WAL flush thinly:
 * the next is not paced (at half of the miniapp benchmark's saturation, commits of ~25 writes
 * paced to ~50 saved no CPU per op and added 3 ms to the median latency; with this at 16,
 * commits of ~33 still added 1.5 ms).
 */
export const PACE_BELOW = 8;

/** A string's lane (FNV-1a): the same actor always takes the same one. */
function laneOf(key: string, lanes: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) % lanes;
}

/**
 * The fence: the keys among `epochs` whose lease still has that epoch, locked `FOR SHARE`.
 * Written with literals (it goes in one simple-protocol query with its BEGIN): keys escaped
 * as string literals, epochs checked to be integers.
 */
export function fenceQuery(epochs: Map<string, number>): string {
  const rows: string[] = [];
  for (const [key, epoch] of epochs) {
    if (!Number.isSafeInteger(epoch)) throw new Error(`epoch of ${key} is not an integer: ${epoch}`);
    rows.push(`(${escapeLiteral(key)}, ${epoch}::bigint)`);
  }
  return `SELECT l.key FROM actor_leases l
            JOIN (VALUES ${rows.join(', ')}) AS f(key, epoch) ON l.key = f.key AND l.epoch = f.epoch
          FOR SHARE OF l`;
}

/**
 * The CTE `held` a self-fencing statement starts with: of the ids in `$first` (as `column`),
 * with their `actor_leases` keys in `$first+1` and epochs in `$first+2`, those whose lease still
 * has that epoch, the lease rows locked `FOR SHARE` as the transaction's fence locks them.
 */
export function heldLeases(column: string, first: number): string {
  return `held AS (
     SELECT f.${column} FROM unnest($${first}::text[], $${first + 1}::text[], $${first + 2}::bigint[]) AS f(${column}, lease, epoch)
       JOIN actor_leases l ON l.key = f.lease AND l.epoch = f.epoch
        FOR SHARE OF l)`;
}

interface Outcome {
  fenced: Set<string>;
  results: Map<Pending, unknown>;
  /** Writes left out of the transaction, with why. */
  refused: Map<Pending, Error>;
}

export class GroupCommitter {
  private readonly writers = new Map<string, BatchWriter<unknown>>();
  /** Kinds of unfenced writes that always take the first lane (see `register`). */
  private readonly pinned = new Set<string>();
  /** Kinds whose writes may wait for company (see `register`). */
  private readonly paced = new Set<string>();
  /** Kinds whose writers size their own items (see `register`). */
  private readonly sizes = new Map<string, (item: unknown) => number>();
  /** The lanes actors' writes and unpinned unfenced writes share. */
  private readonly shared: Lane[];
  /** Kinds whose writers make exactly one statement, for every item or the items it accepts (see `register`). */
  private readonly oneStatement = new Map<string, true | ((item: unknown) => boolean)>();
  /** Kinds whose writers fence their actors' writes themselves (see `register`). */
  private readonly fencesItself = new Set<string>();
  /** Lanes of kinds registered with a lane of their own (see `register`). */
  private readonly own = new Map<string, Lane>();
  /** Every lane, shared and own. */
  private readonly lanes: Lane[];
  /** `key#epoch` of actors whose writes failed: their later writes fail too. */
  private readonly failed = new Set<string>();
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly pool: Pool,
    private readonly options: GroupCommitterOptions,
  ) {
    this.shared = Array.from({ length: Math.max(1, options.lanes) }, newLane);
    this.lanes = [...this.shared];
  }

  /**
   * `sizeOf`: the item's size in bytes, where the writer knows it without serializing the item
   * (by default its JSON is measured). `ownLane`: this kind's (unfenced) writes take a lane of
   * their own, with its own connection, never behind other kinds' transactions (the relay
   * inbox: acknowledging an event never waits for conversations' commits). `oneStatement`: the
   * writer makes exactly one statement (for every item, or for the items the function accepts),
   * so a batch of only this kind's unfenced writes runs without BEGIN and COMMIT (a statement is
   * a transaction of its own). `fencesItself`: given a `Fence`, the writer's statement holds its
   * items' actors to their epochs as the transaction's fence does (their `actor_leases` rows
   * locked `FOR SHARE`, nothing written for an actor whose epoch moved on, `FENCED` returned
   * for its items); with `oneStatement`, a batch of only this kind's writes is then one
   * statement too, fenced writes included — one round trip instead of three. `pinned`: this kind's
   * (unfenced) writes always take the first lane instead of the least busy one, so no two
   * transactions in flight both write them (e.g. the lease epochs, which the other lanes'
   * fences lock: in one lane, no two transactions can wait on each other). `paced`: this
   * kind's writes may wait up to `intervalMs` for others to commit with (see that option): for
   * writes of people acting independently (open loop), whose few milliseconds nobody sees, not
   * for a machine client that keeps a bounded number of requests in flight (closed loop), whose
   * throughput is that number divided by the latency.
   */
  register<T>(
    kind: string,
    writer: BatchWriter<T>,
    options: {
      pinned?: boolean;
      ownLane?: boolean;
      paced?: boolean;
      oneStatement?: boolean | ((item: T) => boolean);
      fencesItself?: boolean;
      sizeOf?: (item: T) => number;
    } = {},
  ): void {
    this.writers.set(kind, writer as BatchWriter<unknown>);
    if (options.pinned) this.pinned.add(kind);
    if (options.paced) this.paced.add(kind);
    if (options.oneStatement) this.oneStatement.set(kind, options.oneStatement as true | ((item: unknown) => boolean));
    if (options.fencesItself) this.fencesItself.add(kind);
    if (options.ownLane && !this.own.has(kind)) {
      const lane = newLane();
      this.own.set(kind, lane);
      this.lanes.push(lane);
    }
    if (options.sizeOf) this.sizes.set(kind, options.sizeOf as (item: unknown) => number);
  }

  /**
   * Queues a write for the next group transaction; settles when it is committed (or not),
   * with the writer's result for it. `actorKey` null: not an actor's write, not fenced.
   */
  submit<T, R = void>(kind: string, actorKey: string | null, epoch: number, item: T): Promise<R> {
    return new Promise<R>((resolve, reject) =>
      this.enqueue(kind, actorKey, epoch, item, resolve as (r: unknown) => void, reject),
    );
  }

  /** `submit` with callbacks: the hot path (an op per message) allocates no promise. */
  enqueue<T>(
    kind: string,
    actorKey: string | null,
    epoch: number,
    item: T,
    resolve: (result: unknown) => void,
    reject: (err: Error) => void,
  ): void {
    if (!this.writers.has(kind)) {
      reject(new Error(`no writer registered for ${kind}`));
      return;
    }
    if (actorKey !== null && this.failed.has(`${actorKey}#${epoch}`)) {
      reject(new Error(`an earlier write of ${actorKey} failed`));
      return;
    }
    let bytes: number;
    try {
      const sizeOf = this.sizes.get(kind);
      bytes = sizeOf ? sizeOf(item) : Buffer.byteLength(JSON.stringify(item) ?? '');
    } catch (err) {
      // Not JSON (a BigInt, a cycle): no writer could store it either.
      if (actorKey !== null) this.failed.add(`${actorKey}#${epoch}`);
      reject(err as Error);
      return;
    }
    const lane =
      actorKey !== null
        ? this.shared[laneOf(actorKey, this.shared.length)]
        : (this.own.get(kind) ?? (this.pinned.has(kind) ? this.shared[0] : this.leastBusy()));
    lane.queue.push({ kind, actorKey, epoch, item, bytes, resolve, reject });
    if (!lane.running) {
      lane.running = true;
      setImmediate(() => void this.drain(lane));
    }
  }

  private leastBusy(): Lane {
    let best = this.shared[0];
    for (const lane of this.shared) {
      if (!lane.running) return lane;
      if (lane.queue.length < best.queue.length) best = lane;
    }
    return best;
  }

  /** Forgets the failure of an actor's earlier epoch. */
  forget(actorKey: string, epoch: number): void {
    this.failed.delete(`${actorKey}#${epoch}`);
  }

  /** Resolves once every write submitted so far has settled. */
  flush(): Promise<void> {
    if (this.idle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private idle(): boolean {
    return this.lanes.every((l) => !l.running && l.queue.length === 0);
  }

  private async drain(lane: Lane): Promise<void> {
    const interval = this.options.intervalMs ?? 0;
    while (lane.queue.length) {
      const wait = lane.started + interval - performance.now();
      if (lane.gather && wait >= 1) await new Promise((resolve) => setTimeout(resolve, wait));
      lane.started = performance.now();
      await this.commit(lane, this.nextBatch(lane));
    }
    lane.running = false;
    if (!this.idle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Takes the lane's next batch: at most `maxBatch` writes and `maxBytes` bytes, at least one write. */
  private nextBatch(lane: Lane): Pending[] {
    const queue = lane.queue;
    const max = Math.min(queue.length, this.options.maxBatch);
    let n = 0;
    let bytes = 0;
    while (n < max && (n === 0 || bytes + queue[n].bytes <= this.options.maxBytes)) bytes += queue[n++].bytes;
    if (n === queue.length) {
      lane.queue = [];
      return queue;
    }
    lane.queue = queue.slice(n);
    return queue.slice(0, n);
  }

  private async commit(lane: Lane, batch: Pending[]): Promise<void> {
    const started = performance.now();
    let live = batch.filter((p) => {
      if (p.actorKey === null || !this.failed.has(`${p.actorKey}#${p.epoch}`)) return true;
      p.reject(new Error(`an earlier write of ${p.actorKey} failed`));
      return false;
    });
    let careful = false;
    for (let attempt = 1; live.length; attempt++) {
      try {
        const { fenced, results, refused } = await this.transact(lane, live, careful);
        for (const p of live) {
          const error = refused.get(p);
          if (error) this.fail(p, error);
          else if (p.actorKey !== null && fenced.has(p.actorKey)) this.fail(p, new FencedError(p.actorKey));
          else p.resolve(results.get(p));
        }
        live = [];
      } catch (err) {
        if (!careful && !isConnectionError(err)) {
          // A statement failed on what it was given: find the writes at fault, commit the rest.
          careful = true;
          attempt--;
          continue;
        }
        const retry = isConnectionError(err) && attempt < this.options.attempts;
        this.options.log.warn(
          {
            err: { message: (err as Error).message, code: (err as { code?: string }).code },
            writes: live.length,
            attempt,
            retry,
          },
          'group commit failed',
        );
        if (!retry) {
          const error = translatePgError(err);
          for (const p of live) this.fail(p, error);
          live = [];
        } else {
          await new Promise((r) => setTimeout(r, 25 * 2 ** attempt));
        }
      }
    }
    this.options.metrics?.groupCommits.observe((performance.now() - started) / 1000);
    this.options.metrics?.groupCommitSize.observe(batch.length);
    // Read before the writers of this batch resume (they continue in microtasks after this returns).
    lane.gather = lane.queue.length > 0 && batch.length < PACE_BELOW && lane.queue.every((p) => this.paced.has(p.kind));
  }

  private fail(p: Pending, err: Error): void {
    if (p.actorKey !== null) this.failed.add(`${p.actorKey}#${p.epoch}`);
    p.reject(err);
  }

  /**
   * One transaction: fence, then each kind's writes. Returns the fenced actor keys, the
   * writers' results and, when `careful`, the writes that were refused (and left out).
   */
  private async transact(lane: Lane, batch: Pending[], careful: boolean): Promise<Outcome> {
    lane.client ??= await this.pool.connect();
    const client = lane.client;
    const results = new Map<Pending, unknown>();
    try {
      if (!careful && this.alone(batch)) {
        // One statement is a transaction of its own: one round trip, not three.
        const kind = batch[0].kind;
        const fence = this.fencesItself.has(kind)
          ? { keys: batch.map((p) => p.actorKey ?? ''), epochs: batch.map((p) => p.epoch) }
          : null;
        await this.write(client, kind, batch, results, fence);
        const fenced = new Set<string>();
        for (const p of batch) if (p.actorKey !== null && results.get(p) === FENCED) fenced.add(p.actorKey);
        return { fenced, results, refused: new Map() };
      }
      const fenced = await this.beginFenced(client, batch);
      const writable = batch.filter((p) => p.actorKey === null || !fenced.has(p.actorKey));
      const refused = new Map<Pending, Error>();
      if (careful)
        await writeCarefully(
          client,
          writable,
          (k, ps) => this.write(client, k, ps, results),
          results,
          refused,
          this.options.log,
        );
      else for (const [kind, pendings] of byKind(writable)) await this.write(client, kind, pendings, results);
      await client.query('COMMIT');
      return { fenced, results, refused };
    } catch (err) {
      if (isConnectionError(err)) {
        // A dead connection goes back destroyed; the next transaction gets a fresh one.
        lane.client = null;
        client.release(err as Error);
      } else {
        await client.query('ROLLBACK').catch(() => undefined);
      }
      throw err;
    }
  }

  /**
   * The batch is writes of one kind whose writer makes one statement for each of them: all
   * unfenced, or all of actors and the writer fencing itself, with one epoch per actor (a batch
   * holding an actor's writes of two epochs is fenced by the transaction, per actor, as ever).
   */
  private alone(batch: Pending[]): boolean {
    const kind = batch[0].kind;
    const one = this.oneStatement.get(kind);
    if (one === undefined) return false;
    const epochs = this.fencesItself.has(kind) ? new Map<string, number>() : null;
    for (const p of batch) {
      if (p.kind !== kind || (one !== true && !one(p.item))) return false;
      // A self-fencing writer fences every item it is given: an unfenced write goes in a transaction.
      if (p.actorKey === null) {
        if (epochs !== null) return false;
        continue;
      }
      if (epochs === null || (epochs.get(p.actorKey) ?? p.epoch) !== p.epoch) return false;
      epochs.set(p.actorKey, p.epoch);
    }
    return true;
  }

  /**
   * Begins the transaction and locks the epochs of the batch's actors (`FOR SHARE`), in one
   * round trip: both statements go as one simple-protocol query, the epochs written into it as
   * literals (keys escaped, epochs checked integers). Returns the actors whose epoch moved on.
   * A round trip saved per transaction is a socket write less per commit, which at a few
   * writes per commit (many quiet sessions) is a large share of the server's time.
   */
  private async beginFenced(client: PoolClient, batch: Pending[]): Promise<Set<string>> {
    const epochs = new Map<string, number>();
    for (const p of batch) if (p.actorKey !== null) epochs.set(p.actorKey, p.epoch);
    const fenced = new Set<string>();
    if (!epochs.size) {
      await client.query('BEGIN');
      return fenced;
    }
    const results = (await client.query(`BEGIN; ${fenceQuery(epochs)}`)) as unknown as { rows: { key: string }[] }[];
    const current = new Set(results[1].rows.map((r) => r.key));
    for (const k of epochs.keys()) if (!current.has(k)) fenced.add(k);
    return fenced;
  }

  private async write(
    client: PoolClient,
    kind: string,
    pendings: Pending[],
    results: Map<Pending, unknown>,
    fence: Fence | null = null,
  ) {
    const out = await (this.writers.get(kind) as BatchWriter<unknown>)(
      client,
      pendings.map((p) => p.item),
      fence,
    );
    if (out) for (const [i, p] of pendings.entries()) results.set(p, out[i]);
  }

  /** Returns the committer's connections to the pool (at shutdown, after `flush`). */
  close(): void {
    for (const lane of this.lanes) {
      lane.client?.release();
      lane.client = null;
    }
  }
}
