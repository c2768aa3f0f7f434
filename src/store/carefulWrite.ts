/**
 * The group commit's careful pass, run after a writer's statement failed on what it was given:
 * every kind is written under a savepoint, and a kind that fails on its data (SQLSTATE
 * classes 22 and 23, or an error thrown by the writer's own code) is tried again in halves,
 * down to the single writes at fault. Those fail; every other write of the transaction
 * commits. See `GroupCommitter` for the guarantees this keeps.
 */
import type { Logger } from '../observability/logger.ts';
import type { PoolClient } from './pool.ts';
import { isConnectionError, isDataError, sqlState, translatePgError } from './translatePgError.ts';

/** One write waiting for a group transaction. */
export interface Pending {
  kind: string;
  /** null: a write of no actor (e.g. the relay inbox), not fenced. */
  actorKey: string | null;
  epoch: number;
  item: unknown;
  /** The item's JSON size in bytes, for GROUP_COMMIT_MAX_BYTES. */
  bytes: number;
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
}

/** The batch's writes by kind, kinds in the order they first appear. */
export function byKind(batch: Pending[]): Map<string, Pending[]> {
  const kinds = new Map<string, Pending[]>();
  for (const p of batch) {
    const items = kinds.get(p.kind);
    if (items) items.push(p);
    else kinds.set(p.kind, [p]);
  }
  return kinds;
}

/** Writes a kind's writes in the open transaction (the writer, with its results recorded). */
type Write = (kind: string, pendings: Pending[]) => Promise<void>;

/**
 * The careful pass: every kind under a savepoint, the writes that fail found and left out.
 * An actor's writes after a refused one are refused too; when one of them was already
 * written, the writes are undone (back to the savepoint after the fence, whose locks stay)
 * and done again without them. Each round leaves out at least one write, so it ends.
 */
export async function writeCarefully(
  client: PoolClient,
  batch: Pending[],
  write: Write,
  results: Map<Pending, unknown>,
  refused: Map<Pending, Error>,
  log: Logger,
): Promise<void> {
  await client.query('SAVEPOINT gc_batch');
  let remaining = batch;
  for (;;) {
    results.clear();
    const failed = new Map<Pending, Error>();
    for (const [kind, pendings] of byKind(remaining))
      await isolate(client, kind, pendings, write, results, failed, log);
    if (!failed.size) return;
    const stopped = new Set<string>();
    const next: Pending[] = [];
    let undo = false;
    for (const p of remaining) {
      const error = failed.get(p);
      if (error) {
        refused.set(p, error);
        if (p.actorKey !== null) stopped.add(p.actorKey);
      } else if (p.actorKey !== null && stopped.has(p.actorKey)) {
        refused.set(p, new Error(`an earlier write of ${p.actorKey} failed`));
        undo = true;
      } else {
        next.push(p);
      }
    }
    if (!undo) return;
    await client.query('ROLLBACK TO SAVEPOINT gc_batch');
    remaining = next;
  }
}

/**
 * Writes `pendings` under a savepoint. When the statement fails on its data, the halves are
 * tried apart, down to the single writes that fail; any other failure fails them all.
 */
async function isolate(
  client: PoolClient,
  kind: string,
  pendings: Pending[],
  write: Write,
  results: Map<Pending, unknown>,
  failed: Map<Pending, Error>,
  log: Logger,
): Promise<void> {
  await client.query('SAVEPOINT gc_write');
  try {
    await write(kind, pendings);
    await client.query('RELEASE SAVEPOINT gc_write');
    return;
  } catch (err) {
    if (isConnectionError(err)) throw err;
    await client.query('ROLLBACK TO SAVEPOINT gc_write');
    await client.query('RELEASE SAVEPOINT gc_write');
    for (const p of pendings) results.delete(p);
    // The database refused the data, or the writer's own code failed on an item: one item may be at fault.
    const byItem = isDataError(err) || sqlState(err) === undefined;
    if (pendings.length === 1 || !byItem) {
      log.warn(
        {
          err: { message: (err as Error).message, code: (err as { code?: string }).code },
          kind,
          writes: pendings.length,
        },
        'group-commit writes refused',
      );
      const error = translatePgError(err);
      for (const p of pendings) failed.set(p, error);
      return;
    }
  }
  const half = Math.ceil(pendings.length / 2);
  await isolate(client, kind, pendings.slice(0, half), write, results, failed, log);
  await isolate(client, kind, pendings.slice(half), write, results, failed, log);
}
