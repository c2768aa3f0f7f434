/** Miniapp sessions, participants and ops in PostgreSQL. */
import { MAX_STALE_VERSIONS } from '../../actors/miniappSession.ts';
import type { LoggedOp } from '../../actors/OpLog.ts';
import { type Op, type Path, sharedWith } from '../../actors/ops.ts';
import { type BatchWriter, FENCED, type Fence, heldLeases } from './GroupCommitter.ts';
import { type Pool, type PoolClient, prepared, query, run, transaction } from './pool.ts';

export interface NewSession {
  id: string;
  app: string;
  owner: string;
  chat: string | null;
  state: unknown;
  participants: string[];
}

export interface StoredSession {
  id: string;
  app: string;
  /** Checkpoint. */
  state: unknown;
  version: number;
  participants: string[];
  /** Ops after `version - window` (some before the checkpoint, for the in-memory log), ascending. */
  ops: LoggedOp[];
}

/** What the group commit writes for miniapp actors. */
export type MiniappWrite =
  /** `row`: the op's row of `miniapp_ops` as JSON (`opWrite`), serialized once. */
  | { t: 'op'; sessionId: string; row: string }
  | { t: 'checkpoint'; sessionId: string; version: number; state: unknown }
  | { t: 'participant'; sessionId: string; user: string };

interface OpRow {
  version: string;
  op_id: string;
  by_user: string;
  op: Op;
  touched: Path;
  conn: string | null;
}

/** The hot read queries, exported so tests can check their plans (`tests/integration/queryPlans.test.ts`). */
export const miniappQueries = {
  access: `SELECT EXISTS (SELECT 1 FROM miniapp_participants p WHERE p.session_id = s.id AND p.user_id = $2) AS participant
             FROM miniapp_sessions s WHERE s.id = $1`,
  session: 'SELECT app, state, version FROM miniapp_sessions WHERE id = $1',
  participants: 'SELECT user_id FROM miniapp_participants WHERE session_id = $1 ORDER BY added_at, user_id',
  opsAfter: `SELECT version, op_id, by_user, op, touched, conn FROM miniapp_ops
              WHERE session_id = $1 AND version > $2 ORDER BY version`,
  // Bounded: stale ops and resumes never need more than MAX_STALE_VERSIONS of them.
  opsBetween: `SELECT version, op_id, by_user, op, touched, conn FROM miniapp_ops
                WHERE session_id = $1 AND version > $2 AND version < $3 ORDER BY version LIMIT ${MAX_STALE_VERSIONS}`,
} as const;

/** What every op, upgrade or checkpoint runs, prepared on each connection (`prepared`). */
const insertOps = (where: string) =>
  `INSERT INTO miniapp_ops (session_id, version, op_id, by_user, op, touched, conn)
     SELECT r.session_id, r.version, r.op_id, r.by_user, r.op, r.touched, r.conn
       FROM jsonb_to_recordset($1::jsonb)
         AS r(session_id text, version bigint, op_id text, by_user text, op jsonb, touched jsonb, conn text)${where}
     ON CONFLICT (session_id, version) DO NOTHING`;

export const miniappStatements = {
  insertOps: insertOps(''),
  /**
   * The ops of a batch committed as this one statement, fencing itself ($2 / $3 / $4: each
   * session, its `actor_leases` key and epoch): the lease rows still at those epochs are locked
   * `FOR SHARE` (`held`), as the group transaction's fence does, only those sessions' ops are
   * written, and the sessions held are returned.
   */
  insertOpsFenced: `WITH ${heldLeases('id', 2)},
   ops AS (
     ${insertOps('\n      WHERE r.session_id IN (SELECT id FROM held)')})
   SELECT id FROM held`,
} as const;

const statements = {
  access: prepared('miniapp_access', miniappQueries.access),
  insertOps: prepared('miniapp_insert_ops', miniappStatements.insertOps),
  insertOpsFenced: prepared('miniapp_insert_ops_fenced', miniappStatements.insertOpsFenced),
  checkpoint: prepared(
    'miniapp_checkpoint',
    `UPDATE miniapp_sessions s SET state = r.state, version = r.version, updated_at = now()
       FROM jsonb_to_recordset($1::jsonb) AS r(id text, version bigint, state jsonb)
      WHERE s.id = r.id AND s.version < r.version`,
  ),
};

const toLogged = (r: OpRow): LoggedOp => ({
  version: Number(r.version),
  opId: r.op_id,
  by: r.by_user,
  op: r.op,
  // One array when both name the same segments, as for an op applied here (`sharedWith`).
  touched: sharedWith(r.op.path, r.touched),
  ...(r.conn ? { conn: r.conn } : {}),
});

/** The write of a logged op: its `miniapp_ops` row, serialized once (sized and written as is). */
export function opWrite(sessionId: string, e: LoggedOp): MiniappWrite {
  const row = JSON.stringify({
    session_id: sessionId,
    version: e.version,
    op_id: e.opId,
    by_user: e.by,
    op: e.op,
    touched: e.touched,
    conn: e.conn ?? null,
  });
  return { t: 'op', sessionId, row };
}

/** A write's size in bytes for GROUP_COMMIT_MAX_BYTES: an op's row as it is, anything else as JSON. */
export const miniappWriteSize = (w: MiniappWrite): number =>
  Buffer.byteLength(w.t === 'op' ? w.row : JSON.stringify(w));

/** A batch of ops as one statement that fences itself (see `MiniappRepository.writeBatch`). */
async function writeOpsFenced(client: PoolClient, items: MiniappWrite[], fence: Fence): Promise<unknown[]> {
  const rows: string[] = [];
  // Each session once (a batch holds one epoch per actor).
  const sessions = new Map<string, number>();
  for (const [i, w] of items.entries()) {
    if (w.t !== 'op') throw new Error(`a ${w.t} is not written by the fenced statement`);
    rows.push(w.row);
    if (!sessions.has(w.sessionId)) sessions.set(w.sessionId, i);
  }
  const ids = [...sessions.keys()];
  const at = [...sessions.values()];
  const { rows: held } = await client.query<{ id: string }>(
    run(statements.insertOpsFenced, [
      `[${rows.join(',')}]`,
      ids,
      at.map((i) => fence.keys[i]),
      at.map((i) => fence.epochs[i]),
    ]),
  );
  const kept = new Set(held.map((r) => r.id));
  return items.map((w) => (kept.has(w.sessionId) ? undefined : FENCED));
}

export class MiniappRepository {
  constructor(private readonly pool: Pool) {}

  async create(s: NewSession): Promise<void> {
    await transaction(this.pool, async (client) => {
      await client.query(
        'INSERT INTO miniapp_sessions (id, app, owner, chat_guid, state, version) VALUES ($1, $2, $3, $4, $5, 0)',
        [s.id, s.app, s.owner, s.chat, JSON.stringify(s.state)],
      );
      await client.query(
        'INSERT INTO miniapp_participants (session_id, user_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING',
        [s.id, s.participants],
      );
    });
  }

  /** Whether the session exists and `user` takes part in it. */
  async access(id: string, user: string): Promise<{ exists: boolean; participant: boolean }> {
    const { rows } = await query<{ participant: boolean }>(this.pool, statements.access, [id, user], {
      idempotent: true,
    });
    return rows.length ? { exists: true, participant: rows[0].participant } : { exists: false, participant: false };
  }

  /** The session's checkpoint, participants and recent ops; null when it does not exist. */
  async load(id: string, window: number): Promise<StoredSession | null> {
    const session = await query<{ app: string; state: unknown; version: string }>(
      this.pool,
      miniappQueries.session,
      [id],
      { idempotent: true },
    );
    if (!session.rows.length) return null;
    const { app, state, version } = session.rows[0];
    const checkpoint = Number(version);
    const [participants, ops] = await Promise.all([
      query<{ user_id: string }>(this.pool, miniappQueries.participants, [id], { idempotent: true }),
      query<OpRow>(this.pool, miniappQueries.opsAfter, [id, Math.max(0, checkpoint - window)], { idempotent: true }),
    ]);
    return {
      id,
      app,
      state,
      version: checkpoint,
      participants: participants.rows.map((r) => r.user_id),
      ops: ops.rows.map(toLogged),
    };
  }

  /** Stored ops with `after` < version < `before`, ascending; at most the first MAX_STALE_VERSIONS of them. */
  async opsBetween(id: string, after: number, before: number): Promise<LoggedOp[]> {
    const { rows } = await query<OpRow>(this.pool, miniappQueries.opsBetween, [id, after, before], {
      idempotent: true,
    });
    return rows.map(toLogged);
  }

  /** Deletes ops older than `maxAgeHours` that are also not among a session's last `keep` versions. */
  async pruneOps(maxAgeHours: number, keep: number): Promise<number> {
    const { rowCount } = await query(
      this.pool,
      `DELETE FROM miniapp_ops o USING miniapp_sessions s
        WHERE o.session_id = s.id AND o.at < now() - make_interval(hours => $1)
          AND o.version <= LEAST(s.version, (SELECT max(version) FROM miniapp_ops m WHERE m.session_id = s.id) - $2)`,
      [maxAgeHours, keep],
    );
    return rowCount ?? 0;
  }

  /**
   * The group commit's writer: multi-row, idempotent statements. Given a `fence` (a batch of
   * only ops, committed as one statement), it fences itself (`insertOpsFenced`): the ops of a
   * session whose epoch moved on are not written and are `FENCED`.
   */
  readonly writeBatch: BatchWriter<MiniappWrite> = async (client, items, fence) => {
    if (fence) return writeOpsFenced(client, items, fence);
    const ops: string[] = [];
    const checkpoints = new Map<string, { id: string; version: number; state: unknown }>();
    const participants: { session_id: string; user_id: string }[] = [];
    for (const w of items) {
      if (w.t === 'op') ops.push(w.row);
      else if (w.t === 'checkpoint') {
        const prev = checkpoints.get(w.sessionId);
        if (!prev || prev.version < w.version)
          checkpoints.set(w.sessionId, { id: w.sessionId, version: w.version, state: w.state });
      } else {
        participants.push({ session_id: w.sessionId, user_id: w.user });
      }
    }
    if (ops.length) {
      await client.query(run(statements.insertOps, [`[${ops.join(',')}]`]));
    }
    if (checkpoints.size) {
      await client.query(run(statements.checkpoint, [JSON.stringify([...checkpoints.values()])]));
    }
    if (participants.length) {
      await client.query(
        `INSERT INTO miniapp_participants (session_id, user_id)
         SELECT r.session_id, r.user_id FROM jsonb_to_recordset($1::jsonb) AS r(session_id text, user_id text)
         ON CONFLICT DO NOTHING`,
        [JSON.stringify(participants)],
      );
    }
  };
}
