/**
 * Miniapp sessions as a kind of actor for the host: rehydration from the store (checkpoint
 * plus the ops after it), and the machine's effects bound to the group commit and to the
 * sockets of the session.
 */
import { type AnyActorRef, createActor, fromPromise } from 'xstate';
import { miniapps } from '../../actors/apps/index.ts';
import {
  type CheckpointInput,
  type MiniappEvent,
  type MiniappOutput,
  miniappMachine,
} from '../../actors/miniapp.machine.ts';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { LOG_WINDOW, type MiniappContext } from '../../actors/miniappSession.ts';
import type { LoggedOp } from '../../actors/OpLog.ts';
import { applyOp } from '../../actors/ops.ts';
import { CloseCodes } from '../errors.ts';
import { type ActorKind, actorKey } from '../host/ActorKind.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { FencedError, type GroupCommitter } from '../store/GroupCommitter.ts';
import { type MiniappRepository, type MiniappWrite, miniappWriteSize, opWrite } from '../store/miniappRepository.ts';

export const MINIAPP = 'miniapp';

/** The sockets of miniapp sessions, as the actor sees them. */
export interface MiniappChannel {
  send(conn: string, frame: ServerFrame): void;
  /** To every socket attached to the session. */
  publish(sessionId: string, frame: ServerFrame): void;
  attach(conn: string, sessionId: string): void;
  detach(conn: string, sessionId: string): void;
  /** Closes every socket of the session (it stopped for a reason other than passivation). */
  closeSession(sessionId: string, code: number, reason: string): void;
  /**
   * The session's actor passivated: every op it took was committed and answered. Called before
   * its lease goes, so that in a cluster the processes holding its sockets hear that it was
   * handed over before its next owner's frames (a single node has nothing to do).
   */
  handOver(sessionId: string): void;
  /**
   * This process now holds a socket of the session, which will join it: its frames must reach
   * this process (cluster mode subscribes to them; a single node has nothing to do). Counted
   * only when it resolves: each resolved `watch` needs its `unwatch`, a rejected one none.
   */
  watch(sessionId: string): Promise<void>;
  /** One of this process's sockets of the session, watched, closed. */
  unwatch(sessionId: string): void;
}

export interface MiniappKindDeps {
  repo: MiniappRepository;
  committer: GroupCommitter;
  channel: MiniappChannel;
  metrics: Metrics;
  log: Logger;
}

/** A session's effects under the epoch of its activation. */
interface Session {
  submit(write: MiniappWrite): Promise<void>;
  /** Queues an op's write: `done` once durable, the actor hears of a failure. */
  enqueue(write: MiniappWrite, done: () => void): void;
  /** Ops up to `version` are durable. */
  committed(version: number): void;
  writeFailed(err: unknown): void;
}

export function createMiniappKind(deps: MiniappKindDeps): ActorKind<MiniappEvent> {
  const { repo, committer, channel, metrics, log } = deps;
  // A batch of only ops is one self-fencing statement (one round trip; checkpoints and participants go in a transaction).
  // Paced: edits come from people, each on their own (GROUP_COMMIT_INTERVAL_MS).
  committer.register<MiniappWrite>(MINIAPP, repo.writeBatch, {
    sizeOf: miniappWriteSize,
    paced: true,
    oneStatement: (w) => w.t === 'op',
    fencesItself: true,
  });

  /**
   * Each live session's ties to the group commit under its epoch. One machine serves every
   * session (a machine per actor would build its state nodes and transition tables again for
   * each), so the effects look the session up by its actor.
   */
  const sessions = new WeakMap<AnyActorRef, Session>();
  const sessionOf = (actor: AnyActorRef): Session => {
    const session = sessions.get(actor);
    if (!session) throw new Error('a miniapp actor without its session');
    return session;
  };
  const machine = miniappMachine.provide({
    actions: {
      send: (_, { conn, frame }) => {
        // Every op is answered once: applied ones are counted at their commit, the rest here.
        if (frame.type === 'conflict') metrics.opOutcomes.inc({ outcome: 'conflict' });
        else if (frame.type === 'error') metrics.opOutcomes.inc({ outcome: frame.code });
        channel.send(conn, frame);
      },
      publish: ({ context }, { frame }) => channel.publish(context.sessionId, frame),
      attach: ({ context }, { conn }) => channel.attach(conn, context.sessionId),
      detach: ({ context }, { conn }) => channel.detach(conn, context.sessionId),
      persistOp: ({ self }, { sessionId, entry, receivedAt }) => {
        const session = sessionOf(self);
        // Nothing here keeps the op's resulting state alive until the commit.
        const version = entry.version;
        session.enqueue(opWrite(sessionId, entry), () => {
          session.committed(version);
          metrics.opsApplied.inc();
          metrics.opLatency.observe((performance.timeOrigin + performance.now() - receivedAt) / 1000);
        });
      },
      persistCheckpoint: ({ self }, { sessionId, version, state }) => {
        const session = sessionOf(self);
        session.submit({ t: 'checkpoint', sessionId, version, state }).catch(session.writeFailed);
      },
      persistParticipant: ({ self }, { sessionId, user, reply }) => {
        const session = sessionOf(self);
        session.submit({ t: 'participant', sessionId, user }).then(
          () => reply(),
          (err) => {
            reply(err);
            session.writeFailed(err);
          },
        );
      },
    },
    actors: {
      loadOps: fromPromise<LoggedOp[], { sessionId: string; after: number; before: number }>(({ input }) =>
        repo.opsBetween(input.sessionId, input.after, input.before),
      ),
      saveCheckpoint: fromPromise<void, CheckpointInput>(({ input }) =>
        sessionOf(input.session).submit({
          t: 'checkpoint',
          sessionId: input.sessionId,
          version: input.version,
          state: input.state,
        }),
      ),
    },
  });

  return {
    name: MINIAPP,
    passivateEvent: { type: 'passivate' },
    isIdle: (snapshot) => (snapshot.context as MiniappContext).conns.size === 0,

    async activate(sessionId, epoch): Promise<AnyActorRef | null> {
      const stored = await repo.load(sessionId, LOG_WINDOW);
      if (!stored) return null;
      const app = miniapps.get(stored.app);
      if (!app) throw new Error(`session ${sessionId} uses unknown app ${stored.app}`);
      let state = stored.state;
      let version = stored.version;
      for (const e of stored.ops) {
        if (e.version <= stored.version) continue;
        if (e.version !== version + 1) throw new Error(`session ${sessionId} has a gap in its ops at ${version + 1}`);
        const replayed = applyOp(app.schema, state, e.op);
        if (!replayed.ok)
          throw new Error(`session ${sessionId} op ${e.version} no longer applies: ${replayed.message}`);
        state = replayed.state;
        version = e.version;
      }
      const key = actorKey(MINIAPP, sessionId);
      committer.forget(key, epoch - 1);
      const actor = createActor(machine, {
        input: {
          sessionId,
          app: stored.app,
          state,
          version,
          checkpointVersion: stored.version,
          participants: stored.participants,
          log: stored.ops.slice(-LOG_WINDOW),
        },
      });
      const writeFailed = (err: unknown) =>
        actor.send({
          type: 'writeFailed',
          reason: err instanceof FencedError ? 'fenced' : 'failed',
          message: err instanceof Error ? err.message : String(err),
        });
      // The commits of one group transaction come back together: tell the actor once, with
      // the highest version, rather than once per op.
      let committedUpTo = 0;
      let notifying = false;
      sessions.set(actor, {
        submit: (write) => committer.submit(MINIAPP, key, epoch, write),
        enqueue: (write, done) => committer.enqueue(MINIAPP, key, epoch, write, done, writeFailed),
        committed(version) {
          committedUpTo = Math.max(committedUpTo, version);
          if (notifying) return;
          notifying = true;
          queueMicrotask(() => {
            notifying = false;
            actor.send({ type: 'committed', version: committedUpTo });
          });
        },
        writeFailed,
      });
      return actor;
    },

    onStopped(sessionId, output) {
      const { reason, message } = output as MiniappOutput;
      if (reason === 'passivated') return channel.handOver(sessionId);
      log.warn({ session: sessionId, reason, message }, 'miniapp session stopped');
      channel.closeSession(sessionId, CloseCodes.internalError, 'session unavailable; reconnect');
    },
  };
}
