/**
 * The pure rules of a miniapp session: deciding an op (apply, conflict or refuse), answering
 * a resume, and what becomes visible when a version is committed. The machine
 * (`miniapp.machine.ts`) sequences them; these functions only compute the next context and
 * the effects to run, so they are tested without an actor or a database.
 */
import { Codes } from '../src/errors.ts';
import { miniapps } from './apps/index.ts';
import type { Conns } from './Conns.ts';
import type { AppliedOp, ServerFrame } from './miniappFrames.ts';
import type { LoggedOp, OpLog } from './OpLog.ts';
import { applyOp, claimedPath, type Op, overlaps } from './ops.ts';

export interface MiniappContext {
  sessionId: string;
  app: string;
  /** Head: every op applied, committed or not. */
  state: unknown;
  version: number;
  /** What is durable, and all that clients are ever shown. */
  committedState: unknown;
  committedVersion: number;
  /** Version of the state stored in `miniapp_sessions` (rehydration replays the ops after it). */
  checkpointVersion: number;
  participants: string[];
  /** The most recent ops, ascending and gap-free, ending at `version` (mutated in place). */
  log: OpLog;
  /** Open sockets and their users (mutated in place). */
  conns: Conns;
  /** Replies that mention versions not yet committed; sent once `after` is committed. */
  held: { after: number; conn: string; frame: ServerFrame }[];
  /** A request waiting for ops older than the log, loaded from the store. */
  deferred: OpsRequest | ResumeRequest | null;
}

export interface OpRequest {
  type: 'op';
  conn: string;
  /**
   * The op's number among its socket's ops (1, 2, …). In a cluster, an op routed again after
   * its owner went away can arrive after a later op of its socket: `seq` tells, see `decideOp`.
   */
  seq?: number;
  by: string;
  opId: string;
  baseVersion: number;
  op: Op;
  /** When the frame arrived (ms since the epoch, sub-ms precise: comparable across the processes of a cluster), for the op latency histogram. */
  receivedAt: number;
}

export interface ResumeRequest {
  type: 'resume';
  conn: string;
  since: number;
}

/**
 * The ops that arrived for a session in one turn of the event loop, in arrival order: one
 * message for the actor, so a burst of edits costs one transition, not one each.
 */
export interface OpsRequest {
  type: 'ops';
  requests: OpRequest[];
}

/** Side effects, as XState parameterized actions the host provides. */
export type Effect =
  | { type: 'send'; params: { conn: string; frame: ServerFrame } }
  | { type: 'publish'; params: { frame: ServerFrame } }
  /** The socket receives the session's published frames from now on. */
  | { type: 'attach'; params: { conn: string } }
  | { type: 'detach'; params: { conn: string } }
  | { type: 'persistOp'; params: { sessionId: string; entry: LoggedOp; receivedAt: number } }
  | { type: 'persistCheckpoint'; params: { sessionId: string; version: number; state: unknown } };

export interface Decision {
  context: Partial<MiniappContext>;
  effects: Effect[];
}

/** Ops kept in memory per session for conflict checks and resume; older ones are read from the store. */
export const LOG_WINDOW = 256;
/**
 * An op whose base is further behind is refused `base_too_old`, without reading the store:
 * every stale op would otherwise cost a read of all the ops since its base.
 */
export const MAX_STALE_VERSIONS = 1000;
/**
 * Most `applied` frames one `resume` replays: a client further behind gets a snapshot, and a
 * resume never reads more than this many ops from the store.
 */
export const MAX_RESUME_OPS = MAX_STALE_VERSIONS;
/** A new checkpoint is written after this many ops. */
export const CHECKPOINT_EVERY = 100;

export function appliedFrame(e: AppliedOp): ServerFrame {
  return { type: 'applied', opId: e.opId, by: e.by, version: e.version, op: e.op };
}

function toApplied(e: AppliedOp): AppliedOp {
  return { opId: e.opId, by: e.by, version: e.version, op: e.op };
}

function errorFrame(code: string, message: string, ref?: string): ServerFrame {
  return ref === undefined ? { type: 'error', code, message } : { type: 'error', code, message, ref };
}

export function snapshotFrame(ctx: MiniappContext): ServerFrame {
  return {
    type: 'snapshot',
    version: ctx.committedVersion,
    state: ctx.committedState,
    participants: ctx.participants,
    online: ctx.conns.onlineUsers(),
  };
}

const presence = (ctx: MiniappContext): Effect => ({
  type: 'publish',
  params: { frame: { type: 'presence', online: ctx.conns.onlineUsers() } },
});

/** A socket joins: it is attached, sent a snapshot, and everyone sees who is online. */
export function decideJoin(ctx: MiniappContext, conn: string, user: string): Decision {
  ctx.conns.add(conn, user);
  return {
    context: {},
    effects: [
      { type: 'attach', params: { conn } },
      { type: 'send', params: { conn, frame: snapshotFrame(ctx) } },
      presence(ctx),
    ],
  };
}

/**
 * Sockets that joined this session while another process ran it, which handed it over (a
 * drain): they have its state already, so they are attached without a snapshot.
 */
export function decideRejoin(ctx: MiniappContext, conns: { conn: string; user: string }[]): Decision {
  const effects: Effect[] = [];
  for (const { conn, user } of conns) if (ctx.conns.add(conn, user)) effects.push({ type: 'attach', params: { conn } });
  if (effects.length) effects.push(presence(ctx));
  return { context: {}, effects };
}

/** A socket leaves: detached, and whoever is still there sees who is online. */
export function decideLeave(ctx: MiniappContext, conn: string): Decision {
  if (!ctx.conns.delete(conn)) return { context: {}, effects: [] };
  const effects: Effect[] = [{ type: 'detach', params: { conn } }];
  if (ctx.conns.size) effects.push(presence(ctx));
  return { context: {}, effects };
}

/** First version held in the log (or the next version when the log is empty). */
function logStart(ctx: MiniappContext): number {
  return ctx.log.firstVersion(ctx.version + 1);
}

/** A resume so far behind that it is answered with a snapshot, whatever the store still holds. */
function tooFarBehind(ctx: MiniappContext, req: ResumeRequest): boolean {
  return ctx.committedVersion - req.since > MAX_RESUME_OPS;
}

/** True when answering `req` needs ops older than the in-memory log. */
export function needsHistory(ctx: MiniappContext, req: OpRequest | ResumeRequest): boolean {
  const from = req.type === 'op' ? req.baseVersion : req.since;
  if (req.type === 'op' && ctx.log.find(req.by, req.opId)) return false;
  if (req.type === 'op' && ctx.version - req.baseVersion > MAX_STALE_VERSIONS) return false;
  if (req.type === 'resume' && tooFarBehind(ctx, req)) return false;
  return from >= 0 && from < ctx.committedVersion && from + 1 < logStart(ctx);
}

/**
 * The oldest version after which stored ops must be read before `req` can be answered, or
 * null when the in-memory log suffices. (Ops of a batch can only make the log longer, so a
 * batch is judged against the log as it is before its first op.)
 */
export function historyNeededAfter(ctx: MiniappContext, req: OpsRequest | ResumeRequest): number | null {
  if (req.type === 'resume') return needsHistory(ctx, req) ? req.since : null;
  let after: number | null = null;
  for (const r of req.requests) {
    if (needsHistory(ctx, r) && (after === null || r.baseVersion < after)) after = r.baseVersion;
  }
  return after;
}

/**
 * Ops in (from, version], from the log and from `history` (ops loaded from the store that
 * precede the log); null when some are missing, i.e. no longer kept.
 */
function opsAfter(ctx: MiniappContext, from: number, history: LoggedOp[]): LoggedOp[] | null {
  const start = logStart(ctx);
  const older = from + 1 < start ? history.filter((e) => e.version > from && e.version < start) : [];
  if (older.length !== Math.max(0, start - from - 1)) return null;
  const recent = ctx.log.after(from);
  return older.length ? [...older, ...recent] : recent;
}

/**
 * Whether `e` was sent by `req`'s socket before `req`: then `req` was made with `e` in view and
 * does not conflict with it. A later op of the same socket that was applied first (its owner
 * went away while `req` was on its way, and `req` was routed again) is like anyone else's: an
 * overlap is a conflict, so an older edit never silently replaces a newer one of its sender.
 */
export function sameSocketBefore(e: Pick<LoggedOp, 'conn' | 'seq'>, req: Pick<OpRequest, 'conn' | 'seq'>): boolean {
  if (e.conn === undefined || e.conn !== req.conn) return false;
  return e.seq === undefined || req.seq === undefined || e.seq < req.seq;
}

/** Decides an op: applies it, answers a conflict, or refuses it. */
export function decideOp(ctx: MiniappContext, req: OpRequest, history: LoggedOp[] = []): Decision {
  const app = miniapps.get(ctx.app);
  if (!app) throw new Error(`session ${ctx.sessionId} has unknown app ${ctx.app}`);

  const seen = ctx.log.find(req.by, req.opId);
  if (seen) {
    // A resent op (after a reconnect) is not applied twice; its sender learns its fate again.
    return seen.version <= ctx.committedVersion
      ? { context: {}, effects: [{ type: 'send', params: { conn: req.conn, frame: appliedFrame(seen) } }] }
      : { context: {}, effects: [] };
  }
  if (req.baseVersion > ctx.version) {
    return refuse(req, Codes.invalid_base_version, `baseVersion ${req.baseVersion} is ahead of version ${ctx.version}`);
  }
  if (ctx.version - req.baseVersion > MAX_STALE_VERSIONS) return tooOld(req);

  const claimed = claimedPath(app.schema, req.op);
  // Most ops clash with nothing, and the log's index of touched paths tells so at once, however
  // stale the base; otherwise the ops since the base are listed and checked one by one.
  const inLog = req.baseVersion + 1 >= logStart(ctx);
  if (!inLog || !ctx.log.clearOf(claimed, req.baseVersion, req.conn, req.seq)) {
    const since = opsAfter(ctx, req.baseVersion, history);
    if (!since) return tooOld(req);
    const clash = since.some((e) => !sameSocketBefore(e, req) && overlaps(e.touched, claimed));
    if (clash) {
      const frame: ServerFrame = { type: 'conflict', opId: req.opId, version: ctx.version, ops: since.map(toApplied) };
      if (ctx.version <= ctx.committedVersion) {
        return { context: {}, effects: [{ type: 'send', params: { conn: req.conn, frame } }] };
      }
      // It names ops not yet durable: it goes out right after their `applied` frames.
      return { context: { held: [...ctx.held, { after: ctx.version, conn: req.conn, frame }] }, effects: [] };
    }
  }

  const result = applyOp(app.schema, ctx.state, req.op);
  if (!result.ok) return refuse(req, Codes.invalid_op, result.message);

  const version = ctx.version + 1;
  const entry: LoggedOp = {
    opId: req.opId,
    by: req.by,
    version,
    op: req.op,
    touched: result.touched,
    conn: req.conn,
    seq: req.seq,
    state: result.state,
  };
  const effects: Effect[] = [
    { type: 'persistOp', params: { sessionId: ctx.sessionId, entry, receivedAt: req.receivedAt } },
  ];
  let checkpointVersion = ctx.checkpointVersion;
  if (version - checkpointVersion >= CHECKPOINT_EVERY) {
    effects.push({ type: 'persistCheckpoint', params: { sessionId: ctx.sessionId, version, state: result.state } });
    checkpointVersion = version;
  }
  // Trimming waits for the commit (`decideCommitted`): the log must keep reaching back to
  // the bases the next ops of a batch were judged against.
  ctx.log.append(entry);
  return { context: { state: result.state, version, checkpointVersion }, effects };
}

/** Decides the ops of a batch in order, each against the session as the ones before it left it. */
export function decideOps(ctx: MiniappContext, req: OpsRequest, history: LoggedOp[] = []): Decision {
  if (req.requests.length === 1) return decideOp(ctx, req.requests[0], history);
  let current = ctx;
  const context: Partial<MiniappContext> = {};
  const effects: Effect[] = [];
  for (const r of req.requests) {
    const d = decideOp(current, r, history);
    Object.assign(context, d.context);
    current = { ...current, ...d.context };
    for (const e of d.effects) effects.push(e);
  }
  return { context, effects };
}

const tooOld = (req: OpRequest): Decision =>
  refuse(
    req,
    Codes.base_too_old,
    `the ops since version ${req.baseVersion} are no longer kept; resync and apply the edit again`,
  );

function refuse(req: OpRequest, code: string, message: string): Decision {
  return {
    context: {},
    effects: [{ type: 'send', params: { conn: req.conn, frame: errorFrame(code, message, req.opId) } }],
  };
}

/**
 * Answers `resume`: the committed `applied` frames after `since`, or a snapshot when they are
 * gone or more than MAX_RESUME_OPS of them.
 */
export function decideResume(ctx: MiniappContext, req: ResumeRequest, history: LoggedOp[] = []): Decision {
  const send = (frame: ServerFrame): Effect => ({ type: 'send', params: { conn: req.conn, frame } });
  if (req.since > ctx.committedVersion || req.since < 0 || tooFarBehind(ctx, req))
    return { context: {}, effects: [send(snapshotFrame(ctx))] };
  const ops = opsAfter(ctx, req.since, history);
  if (!ops) return { context: {}, effects: [send(snapshotFrame(ctx))] };
  return {
    context: {},
    effects: ops.filter((e) => e.version <= ctx.committedVersion).map((e) => send(appliedFrame(e))),
  };
}

/**
 * Versions up to `version` are durable: their `applied` frames go to every socket, in
 * order, and replies held for them follow.
 */
export function decideCommitted(ctx: MiniappContext, version: number): Decision {
  if (version <= ctx.committedVersion) return { context: {}, effects: [] };
  const effects: Effect[] = [];
  let committedState = ctx.committedState;
  for (let v = ctx.committedVersion + 1; v <= version; v++) {
    const entry = ctx.log.at(v);
    if (!entry) continue;
    effects.push({ type: 'publish', params: { frame: appliedFrame(entry) } });
    committedState = entry.state;
    // The log (mutated in place, like the rest of its bookkeeping) keeps no state once durable.
    entry.state = undefined;
  }
  // While older ops load for a deferred request, the log must keep reaching back to them.
  if (ctx.deferred === null) ctx.log.trim(version);
  const ready = ctx.held.filter((h) => h.after <= version);
  for (const h of ready) effects.push({ type: 'send', params: { conn: h.conn, frame: h.frame } });
  return {
    context: {
      committedVersion: version,
      committedState,
      held: ready.length ? ctx.held.filter((h) => h.after > version) : ctx.held,
    },
    effects,
  };
}
