/**
 * A miniapp session as an XState actor: it holds the state in memory, takes one message at a
 * time, and is the only writer of its ops. Ops are applied in memory at once and pipelined
 * into the host's group commit (`persistOp`); their `applied` frames go out when the commit
 * comes back as `committed`. Every side effect is a named action or actor the host provides.
 */
import {
  type ActorRefFrom,
  type AnyActorRef,
  assign,
  type DoneActorEvent,
  enqueueActions,
  fromPromise,
  setup,
} from 'xstate';
import { Codes } from '../src/errors.ts';
import { Conns } from './Conns.ts';
import type { ServerFrame } from './miniappFrames.ts';
import {
  type Decision,
  decideCommitted,
  decideJoin,
  decideLeave,
  decideOps,
  decideRejoin,
  decideResume,
  historyNeededAfter,
  LOG_WINDOW,
  MAX_STALE_VERSIONS,
  type MiniappContext,
  type OpsRequest,
  type ResumeRequest,
} from './miniappSession.ts';
import { type LoggedOp, OpLog } from './OpLog.ts';

export interface MiniappInput {
  sessionId: string;
  app: string;
  /** State at `checkpointVersion` with every logged op after it replayed. */
  state: unknown;
  version: number;
  checkpointVersion: number;
  participants: string[];
  /** The most recent stored ops, ascending, ending at `version`. */
  log: LoggedOp[];
}

/** What a reader (`GET /v1/miniapps/:id`) is shown: the committed state. */
export interface MiniappView {
  id: string;
  app: string;
  version: number;
  state: unknown;
  participants: string[];
}

export type MiniappEvent =
  | { type: 'join'; conn: string; user: string }
  /**
   * Sockets that joined this session when another process ran it, which handed it over (a
   * drain): they have its state already, so they are attached without a snapshot.
   */
  | { type: 'rejoin'; conns: { conn: string; user: string }[] }
  | { type: 'leave'; conn: string }
  | OpsRequest
  | ResumeRequest
  | { type: 'addParticipant'; user: string; reply: (error?: Error) => void }
  | { type: 'read'; reply: (view: MiniappView) => void }
  | { type: 'committed'; version: number }
  | { type: 'writeFailed'; reason: 'fenced' | 'failed'; message: string }
  | { type: 'passivate' };

export interface MiniappOutput {
  reason: 'passivated' | 'fenced' | 'failed';
  message?: string;
}

interface Context extends MiniappContext {
  stop: MiniappOutput | null;
}

const notProvided = (name: string) => () => {
  throw new Error(`${name} must be provided by the actor host`);
};

/** What `saveCheckpoint` is given: the session's state at `version`, and its actor (`session`). */
export interface CheckpointInput {
  session: AnyActorRef;
  sessionId: string;
  version: number;
  state: unknown;
}

const base = setup({
  types: {
    context: {} as Context,
    events: {} as MiniappEvent,
    input: {} as MiniappInput,
    output: {} as MiniappOutput,
    tags: {} as 'busy',
  },
  actors: {
    /** Stored ops with `after` < version < `before`, ascending. */
    loadOps: fromPromise<LoggedOp[], { sessionId: string; after: number; before: number }>(notProvided('loadOps')),
    /** Stores the state at `version` durably, after every op before it. */
    saveCheckpoint: fromPromise<void, CheckpointInput>(notProvided('saveCheckpoint')),
  },
  actions: {
    send: (_, _params: { conn: string; frame: ServerFrame }) => {},
    publish: (_, _params: { frame: ServerFrame }) => {},
    attach: (_, _params: { conn: string }) => {},
    detach: (_, _params: { conn: string }) => {},
    /** Queues the op for the group commit; its outcome returns as `committed` or `writeFailed`. */
    persistOp: (_, _params: { sessionId: string; entry: LoggedOp; receivedAt: number }) => {},
    persistCheckpoint: (_, _params: { sessionId: string; version: number; state: unknown }) => {},
    persistParticipant: (_, _params: { sessionId: string; user: string; reply: (error?: Error) => void }) => {},
  },
  guards: {
    needsHistory: ({ context, event }) =>
      (event.type === 'ops' || event.type === 'resume') && historyNeededAfter(context, event) !== null,
  },
});

/** Runs a decision's context change and its effects, in order. */
const apply = (decide: (args: { context: Context; event: MiniappEvent }) => Decision) =>
  base.enqueueActions(({ context, event, enqueue }) => {
    const decision = decide({ context, event });
    // A decision that changes nothing (a join, a leave, a resume) costs no new context.
    if (Object.keys(decision.context).length) enqueue.assign(decision.context);
    for (const effect of decision.effects) enqueue(effect);
  });

export const miniappMachine = base.createMachine({
  id: 'miniapp',
  context: ({ input }) => ({
    sessionId: input.sessionId,
    app: input.app,
    state: input.state,
    version: input.version,
    committedState: input.state,
    committedVersion: input.version,
    checkpointVersion: input.checkpointVersion,
    participants: input.participants,
    log: new OpLog(input.log, LOG_WINDOW),
    conns: new Conns(),
    held: [],
    deferred: null,
    stop: null,
  }),
  initial: 'active',
  output: ({ context }) => context.stop ?? { reason: 'failed', message: 'stopped without a reason' },
  on: {
    committed: {
      actions: apply(({ context, event }) => decideCommitted(context, (event as { version: number }).version)),
    },
    writeFailed: {
      target: '.stopped',
      actions: assign({ stop: ({ event }) => ({ reason: event.reason, message: event.message }) }),
    },
    leave: {
      actions: apply(({ context, event }) => decideLeave(context, (event as { conn: string }).conn)),
    },
    read: {
      actions: ({ context, event }) =>
        event.reply({
          id: context.sessionId,
          app: context.app,
          version: context.committedVersion,
          state: context.committedState,
          participants: context.participants,
        }),
    },
  },
  states: {
    active: {
      on: {
        join: {
          actions: apply(({ context, event }) => {
            const { conn, user } = event as { conn: string; user: string };
            return decideJoin(context, conn, user);
          }),
        },
        rejoin: {
          actions: apply(({ context, event }) =>
            decideRejoin(context, (event as Extract<MiniappEvent, { type: 'rejoin' }>).conns),
          ),
        },
        ops: [
          { guard: 'needsHistory', target: 'loadingHistory', actions: assign({ deferred: ({ event }) => event }) },
          { actions: apply(({ context, event }) => decideOps(context, event as OpsRequest)) },
        ],
        resume: [
          { guard: 'needsHistory', target: 'loadingHistory', actions: assign({ deferred: ({ event }) => event }) },
          { actions: apply(({ context, event }) => decideResume(context, event as ResumeRequest)) },
        ],
        addParticipant: {
          actions: enqueueActions(({ context, event, enqueue }) => {
            if (context.participants.includes(event.user)) {
              event.reply();
              return;
            }
            enqueue.assign({ participants: [...context.participants, event.user] });
            enqueue({
              type: 'persistParticipant',
              params: { sessionId: context.sessionId, user: event.user, reply: event.reply },
            });
          }),
        },
        passivate: { target: 'passivating' },
      },
    },
    loadingHistory: {
      tags: ['busy'],
      invoke: {
        src: 'loadOps',
        input: ({ context }) => {
          const req = context.deferred as OpsRequest | ResumeRequest;
          const before = context.log.firstVersion(context.version + 1);
          return { sessionId: context.sessionId, after: historyNeededAfter(context, req) ?? before - 1, before };
        },
        onDone: {
          target: 'active',
          actions: [
            // Keep what was read: the next stale request of this kind is answered from memory.
            ({ context, event }) =>
              context.log.prepend((event as unknown as DoneActorEvent<LoggedOp[]>).output, MAX_STALE_VERSIONS),
            apply(({ context, event }) => {
              const req = context.deferred as OpsRequest | ResumeRequest;
              const history = (event as unknown as DoneActorEvent<LoggedOp[]>).output;
              return req.type === 'ops' ? decideOps(context, req, history) : decideResume(context, req, history);
            }),
            assign({ deferred: null }),
          ],
        },
        onError: {
          target: 'active',
          actions: enqueueActions(({ context, enqueue }) => {
            const req = context.deferred as OpsRequest | ResumeRequest;
            const message = 'older ops could not be read; try again';
            const refused: { conn: string; frame: ServerFrame }[] =
              req.type === 'ops'
                ? req.requests.map((r) => ({
                    conn: r.conn,
                    frame: { type: 'error', code: Codes.db_unavailable, message, ref: r.opId },
                  }))
                : [{ conn: req.conn, frame: { type: 'error', code: Codes.db_unavailable, message } }];
            for (const params of refused) enqueue({ type: 'send', params });
            enqueue.assign({ deferred: null });
          }),
        },
      },
    },
    passivating: {
      tags: ['busy'],
      invoke: {
        src: 'saveCheckpoint',
        input: ({ context, self }) => ({
          session: self,
          sessionId: context.sessionId,
          version: context.version,
          state: context.state,
        }),
        onDone: { target: 'stopped', actions: assign({ stop: { reason: 'passivated' } }) },
        onError: {
          target: 'stopped',
          actions: assign({
            stop: ({ event }) => ({ reason: 'failed', message: `checkpoint failed: ${String(event.error)}` }),
          }),
        },
      },
    },
    stopped: { type: 'final' },
  },
});

export type MiniappActor = ActorRefFrom<typeof miniappMachine>;
