/**
 * Group commit: writes submitted by every actor are committed together, one transaction per
 * turn, with multi-row statements per kind, so durable throughput is not one commit per op.
 *
 * Writes go to one of `lanes` lanes (GROUP_COMMIT_LANES, one by default), each with its own
 * connection and one transaction in flight: an actor's writes always take the same lane (by
 * its key), unfenced writes the least busy one. With several lanes, transactions commit at
 * once — PostgreSQL works on them in parallel and flushes their WAL together.
 *
 * Guarantees:
 * - Per actor, writes are committed in submission order (its lane: one transaction in flight, FIFO).
 * - Every transaction first checks each actor's epoch in `actor_leases` (`FOR SHARE`, so a
 *   concurrent activation waits for the commit); writes of an actor whose epoch moved on are
 *   not written and fail with `FencedError`.
 * - Once a write of an actor fails, its later writes fail too (until it is re-activated with
 *   a new epoch), so what is stored is always a prefix of what the actor submitted.
 * - A transaction that failed on a connection error is retried on a new connection; writers
 *   must therefore be idempotent (`ON CONFLICT DO NOTHING`, monotonic updates).
 */
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Pool, PoolClient } from './pool.ts';
import { isConnectionError, translatePgError } from './translatePgError.ts';

/**
 * Writes a batch of one kind's items inside the group transaction. Must be idempotent. It may
 * return one result per item (in order), which its `submit` resolves with.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: writers without results are plain async functions.
export type BatchWriter<T> = (client: PoolClient, items: T[]) => Promise<unknown[] | void>;

export class FencedError extends Error {
  constructor(readonly actorKey: string) {
    super(`actor ${actorKey} was taken over by another owner`);
    this.name = 'FencedError';
  }
}

interface Pending {
  kind: string;
  /** null: a write of no actor (e.g. the relay inbox), not fenced. */
  actorKey: string | null;
  epoch: number;
  item: unknown;
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
}

export interface GroupCommitterOptions {
  maxBatch: number;
  attempts: number;
  /** Transactions that may be in flight at once (≥ 1). */
  lanes: number;
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
}

/** A string's lane (FNV-1a): the same actor always takes the same one. */
function laneOf(key: string, lanes: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) % lanes;
}

export class GroupCommitter {
  private readonly writers = new Map<string, BatchWriter<unknown>>();
  /** Kinds of unfenced writes that always take the first lane (see `register`). */
  private readonly pinned = new Set<string>();
  private readonly lanes: Lane[];
  /** `key#epoch` of actors whose writes failed: their later writes fail too. */
  private readonly failed = new Set<string>();
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly pool: Pool,
    private readonly options: GroupCommitterOptions,
  ) {
    this.lanes = Array.from({ length: Math.max(1, options.lanes) }, () => ({
      queue: [],
      running: false,
      client: null,
    }));
  }

  /**
   * `pinned`: this kind's (unfenced) writes always take the first lane instead of the least
   * busy one, so no two transactions in flight both write them (e.g. the lease epochs, which
   * the other lanes' fences lock: in one lane, no two transactions can wait on each other).
   */
  register<T>(kind: string, writer: BatchWriter<T>, options: { pinned?: boolean } = {}): void {
    this.writers.set(kind, writer as BatchWriter<unknown>);
    if (options.pinned) this.pinned.add(kind);
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
    const lane =
      actorKey !== null
        ? this.lanes[laneOf(actorKey, this.lanes.length)]
        : this.pinned.has(kind)
          ? this.lanes[0]
          : this.leastBusy();
    lane.queue.push({ kind, actorKey, epoch, item, resolve, reject });
    if (!lane.running) {
      lane.running = true;
      setImmediate(() => void this.drain(lane));
    }
  }

  private leastBusy(): Lane {
    let best = this.lanes[0];
    for (const lane of this.lanes) {
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
    while (lane.queue.length) {
      const batch =
        lane.queue.length <= this.options.maxBatch ? lane.queue : lane.queue.slice(0, this.options.maxBatch);
      lane.queue = batch === lane.queue ? [] : lane.queue.slice(batch.length);
      await this.commit(lane, batch);
    }
    lane.running = false;
    if (!this.idle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async commit(lane: Lane, batch: Pending[]): Promise<void> {
    const started = performance.now();
    let live = batch.filter((p) => {
      if (p.actorKey === null || !this.failed.has(`${p.actorKey}#${p.epoch}`)) return true;
      p.reject(new Error(`an earlier write of ${p.actorKey} failed`));
      return false;
    });
    for (let attempt = 1; live.length; attempt++) {
      try {
        const { fenced, results } = await this.transact(lane, live);
        for (const p of live) {
          if (p.actorKey !== null && fenced.has(p.actorKey)) this.fail(p, new FencedError(p.actorKey));
          else p.resolve(results.get(p));
        }
        live = [];
      } catch (err) {
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
  }

  private fail(p: Pending, err: Error): void {
    if (p.actorKey !== null) this.failed.add(`${p.actorKey}#${p.epoch}`);
    p.reject(err);
  }

  /** One transaction: fence, then each kind's writes. Returns the fenced actor keys and the writers' results. */
  private async transact(
    lane: Lane,
    batch: Pending[],
  ): Promise<{ fenced: Set<string>; results: Map<Pending, unknown> }> {
    lane.client ??= await this.pool.connect();
    const client = lane.client;
    try {
      await client.query('BEGIN');
      const epochs = new Map<string, number>();
      for (const p of batch) if (p.actorKey !== null) epochs.set(p.actorKey, p.epoch);
      const fenced = new Set<string>();
      if (epochs.size) {
        const { rows } = await client.query<{ key: string }>(
          `SELECT l.key FROM actor_leases l
             JOIN unnest($1::text[], $2::bigint[]) AS f(key, epoch) ON l.key = f.key AND l.epoch = f.epoch
           FOR SHARE OF l`,
          [[...epochs.keys()], [...epochs.values()]],
        );
        const current = new Set(rows.map((r) => r.key));
        for (const k of epochs.keys()) if (!current.has(k)) fenced.add(k);
      }
      const byKind = new Map<string, Pending[]>();
      for (const p of batch) {
        if (p.actorKey !== null && fenced.has(p.actorKey)) continue;
        const items = byKind.get(p.kind) ?? [];
        byKind.set(p.kind, items);
        items.push(p);
      }
      const results = new Map<Pending, unknown>();
      for (const [kind, pendings] of byKind) {
        const out = await (this.writers.get(kind) as BatchWriter<unknown>)(
          client,
          pendings.map((p) => p.item),
        );
        if (out) for (const [i, p] of pendings.entries()) results.set(p, out[i]);
      }
      await client.query('COMMIT');
      return { fenced, results };
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

  /** Returns the committer's connections to the pool (at shutdown, after `flush`). */
  close(): void {
    for (const lane of this.lanes) {
      lane.client?.release();
      lane.client = null;
    }
  }
}
