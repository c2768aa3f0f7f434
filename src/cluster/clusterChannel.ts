/**
 * The sockets of miniapp sessions across a cluster, as the miniapp actors see them (the same
 * `MiniappChannel` as on a single node). A session's actor runs on one process; its sockets
 * may be on any.
 *
 * - `send` to a connection: here when the connection is this process's (its id names its
 *   process), else over the bus to that process.
 * - `publish` (`applied`, `presence`): to this process's sockets through uWS topics, and to
 *   the session's bus topic, to which every process that holds sockets of the session is
 *   subscribed (`watch`, while it holds them) and which it relays to its own sockets. One
 *   owner publishes a session's frames in version order, and the bus keeps one sender's order.
 * - `attach`/`detach` (a socket starts or stops receiving the session's frames): where the
 *   socket is. An `attach` follows its socket's snapshot on the same bus channel, so frames
 *   published after the snapshot reach it, and the ones before never do.
 * - `closeSession`: every socket of the session, on every process, closes (1011) and resumes.
 * - `handOver`: the session's actor passivated here (a drain, or idle), before its lease goes:
 *   the processes holding its sockets hear it, and make them `rejoin` the next owner.
 *
 * Everything the channel sends in one turn of the event loop leaves at the end of it, in the
 * order it was sent, consecutive items for one process (or one session's topic) in one bus
 * message: a resume replaying 1,000 `applied` frames to a socket elsewhere is one message, and
 * a group commit's frames of a session are one publish.
 *
 * After a reconnection to Redis, frames may have been lost in between: sockets of sessions
 * owned elsewhere are closed with 1011, and the clients resume from their last version.
 *
 * A process that dies holding sockets cannot tell their sessions they left: the owner finds
 * out when a message to that process reaches nobody, or when a periodic look at the processes
 * its sessions' sockets are on finds one gone, and `connGone` makes those sockets leave.
 *
 * A session that moves to another process: the frames of its new owner come from another
 * process id. When its previous owner handed it over (a drain: every op it took was committed
 * and answered before it let go; `handOver`), nothing changes for the sockets. Otherwise the
 * previous owner died or was cut off, and ops it had taken may never be answered: the sockets
 * of the session are closed with 1011, and their clients resume and send them again (a resent
 * op is applied once).
 */
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { AppError, CloseCodes } from '../errors.ts';
import type { MiniappChannel } from '../miniapp/createMiniappKind.ts';
import type { Logger } from '../observability/logger.ts';
import type { Bus, BusHandler } from './Bus.ts';
import { processOfConn } from './processId.ts';
import { withDeadline } from './redis.ts';

/** What one process sends another in one message: its items for that process's sockets, in order. */
type ConnItem = ['s', string, ServerFrame] | ['a', string, string] | ['d', string, string];
/** What the owner publishes to a session's topic in one message: frames, or a close. */
type TopicItem = ['f', ServerFrame] | ['c', number, string];

type ChannelMessage =
  | { t: 'c.conns'; items: ConnItem[] }
  | { t: 'c.session'; sessionId: string; items: TopicItem[] }
  | { t: 'c.handover'; sessionId: string };

const topicOf = (sessionId: string) => `s:${sessionId}`;

/**
 * How long a socket waits for its session's bus topic to be subscribed before it is refused
 * (Redis slow, or cut meanwhile; while Redis is known to be away, sockets are refused at once).
 */
const WATCH_TIMEOUT_MS = 10_000;

const unreachable = () => new AppError('session_unavailable', 'this server cannot reach Redis; reconnect');

/** How long this process remembers that it published for a session. */
const PUBLISHED_MEMORY_MS = 10 * 60_000;

export interface ClusterChannel extends MiniappChannel {
  /** After this process passivated its actors (a drain): what is queued leaves, the timers stop. */
  close(): void;
}

export interface ClusterChannelOptions {
  /** A socket of another process that is gone (its process died): it leaves `sessionId`. */
  connGone(conn: string, sessionId: string): void;
  /**
   * How often this process looks whether the owners of the sessions it follows still listen
   * (a fraction of ACTOR_LEASE_MS): one that died took the ops in flight to it along, and its
   * sessions' sockets here resume at once rather than when their clients' answers time out.
   */
  ownerCheckMs: number;
  /**
   * The process holding each session's lease now (null: none). An owner that still listens
   * but lost its lease (paused, cut off from Redis) is found this way: one read for them all.
   */
  holders(sessionIds: string[]): Promise<(string | null)[]>;
  /** A session this process follows was handed over by its owner (a drain). */
  handedOver(sessionId: string): void;
}

/** How often the processes holding attached sockets of this process's sessions are looked for. */
const PRESENCE_CHECK_MS = 5000;

export function createClusterChannel(
  local: MiniappChannel,
  bus: Bus,
  log: Logger,
  options: ClusterChannelOptions,
): ClusterChannel {
  const self = bus.self;
  /** Sockets of each watched session here, and its topic subscription. */
  const watched = new Map<string, { count: number; ready: Promise<void>; handler: BusHandler }>();
  /** The process whose frames a watched session's sockets get, and whether it handed the session over. */
  const owners = new Map<string, { process: string; handedOver: boolean }>();
  /**
   * Sessions whose frames this process published (as their owner), with when it last did.
   * Forgotten after a quiet while: a handover missed for one only makes its sockets resume.
   */
  const published = new Map<string, number>();
  const prune = setInterval(() => {
    const before = Date.now() - PUBLISHED_MEMORY_MS;
    for (const [sessionId, at] of published) if (at < before) published.delete(sessionId);
  }, PUBLISHED_MEMORY_MS);
  prune.unref();

  /** `process` publishes for `sessionId` now; false when its sockets were closed to resume instead. */
  function ownedBy(sessionId: string, process: string): boolean {
    const before = owners.get(sessionId);
    if (before?.process === process) return true;
    if (watched.has(sessionId)) owners.set(sessionId, { process, handedOver: false });
    if (!before || before.handedOver) return true;
    log.info({ session: sessionId }, 'a session moved from a process that did not hand it over: its sockets resume');
    local.closeSession(sessionId, CloseCodes.internalError, 'session moved; reconnect');
    return false;
  }

  const relay: BusHandler = (raw, from) => {
    // This process's own publications reached its sockets already, through uWS.
    if (from === self) return;
    const message = raw as ChannelMessage;
    if (message?.t === 'c.session') {
      const { sessionId, items } = message;
      for (const item of items) {
        if (item[0] === 'c') local.closeSession(sessionId, item[1], item[2]);
        else if (ownedBy(sessionId, from)) local.publish(sessionId, item[1]);
      }
    } else if (message?.t === 'c.handover') {
      const owner = owners.get(message.sessionId);
      if (owner?.process === from) owner.handedOver = true;
      // The next owner started without this process's sockets: they join it. It may already
      // run (here or elsewhere: the lease went before this message), and sockets it has are
      // not joined twice.
      if (watched.has(message.sessionId)) options.handedOver(message.sessionId);
    }
  };

  bus.onMessage((raw) => {
    const message = raw as ChannelMessage;
    if (message?.t !== 'c.conns') return;
    for (const item of message.items) {
      if (item[0] === 's') local.send(item[1], item[2]);
      else if (item[0] === 'a') local.attach(item[1], item[2]);
      else local.detach(item[1], item[2]);
    }
  });

  bus.onReconnect(() => {
    // Frames of sessions run elsewhere may have been lost meanwhile; this process's own went
    // to its sockets through uWS.
    const elsewhere = [...watched.keys()].filter((sessionId) => owners.get(sessionId)?.process !== self);
    if (!elsewhere.length) return;
    log.warn({ sessions: elsewhere.length }, 'reconnected to Redis: sockets of sessions run elsewhere resume');
    for (const sessionId of elsewhere)
      local.closeSession(sessionId, CloseCodes.internalError, 'session unavailable; reconnect');
  });

  /**
   * What this turn sends, in order: consecutive items for one process, or for one session's
   * topic, travel as one message.
   */
  type Outgoing = { to: 'process'; id: string; items: ConnItem[] } | { to: 'topic'; id: string; items: TopicItem[] };
  let outgoing: Outgoing[] = [];
  const flush = () => {
    const batch = outgoing;
    outgoing = [];
    for (const out of batch) {
      if (out.to === 'topic') {
        bus.publish(topicOf(out.id), { t: 'c.session', sessionId: out.id, items: out.items } satisfies ChannelMessage);
        continue;
      }
      const process = out.id;
      bus.send(process, { t: 'c.conns', items: out.items } satisfies ChannelMessage, () => processGone(process));
    }
  };
  function queue(to: 'process', id: string, item: ConnItem): void;
  function queue(to: 'topic', id: string, item: TopicItem): void;
  function queue(to: Outgoing['to'], id: string, item: ConnItem | TopicItem): void {
    if (!outgoing.length) setImmediate(flush);
    const last = outgoing[outgoing.length - 1];
    if (last?.to === to && last.id === id) (last.items as (ConnItem | TopicItem)[]).push(item);
    else outgoing.push({ to, id, items: [item] } as Outgoing);
  }

  /** Sockets of other processes attached to this process's sessions: conn → session. */
  const remoteConns = new Map<string, string>();
  function processGone(process: string): void {
    for (const [conn, sessionId] of remoteConns) {
      if (processOfConn(conn) !== process) continue;
      remoteConns.delete(conn);
      options.connGone(conn, sessionId);
    }
  }
  const presenceCheck = setInterval(() => {
    const processes = new Set([...remoteConns.keys()].map(processOfConn));
    if (!processes.size || !bus.connected()) return;
    bus.present([...processes]).then(
      (present) => {
        for (const process of processes) if (!present.has(process)) processGone(process);
      },
      (err) => log.debug({ err }, 'could not look for the processes holding sockets'),
    );
  }, PRESENCE_CHECK_MS);
  presenceCheck.unref();

  const ownerCheck = setInterval(() => {
    const followed = new Map<string, string[]>();
    for (const [sessionId, { process, handedOver }] of owners) {
      // A drained owner handed its sessions over: nothing of theirs was lost with it.
      if (process === self || handedOver || !watched.has(sessionId)) continue;
      followed.set(process, [...(followed.get(process) ?? []), sessionId]);
    }
    if (!followed.size || !bus.connected()) return;
    const sessions = [...followed.values()].flat();
    Promise.all([bus.present([...followed.keys()]), options.holders(sessions)]).then(
      ([present, holders]) => {
        // As things are now, not when the look began: a drained owner publishes its handover
        // before its lease goes, but the handover may arrive while Redis is being asked.
        const lost = sessions.filter((sessionId, i) => {
          const owner = owners.get(sessionId);
          if (owner === undefined || owner.handedOver || !watched.has(sessionId)) return false;
          return !present.has(owner.process) || holders[i] !== owner.process;
        });
        if (!lost.length) return;
        log.info({ sessions: lost.length }, 'sessions followed here lost their owner: their sockets resume');
        for (const sessionId of lost) {
          owners.delete(sessionId);
          local.closeSession(sessionId, CloseCodes.internalError, 'session moved; reconnect');
        }
      },
      (err) => log.debug({ err }, 'could not look for the owners of followed sessions'),
    );
  }, options.ownerCheckMs);
  ownerCheck.unref();

  function unwatch(sessionId: string): void {
    const entry = watched.get(sessionId);
    if (!entry) return;
    if (--entry.count > 0) return;
    watched.delete(sessionId);
    owners.delete(sessionId);
    // A subscription Redis did not confirm still stands (it comes back on reconnect): undone too.
    bus.unsubscribe(topicOf(sessionId), entry.handler);
  }

  const remote = (conn: string) => {
    const process = processOfConn(conn);
    return process === self ? undefined : process;
  };

  return {
    send(conn, frame) {
      const at = remote(conn);
      if (at) queue('process', at, ['s', conn, frame]);
      else local.send(conn, frame);
    },

    publish(sessionId, frame) {
      published.set(sessionId, Date.now());
      // Sockets here that followed another owner which did not hand over were closed instead.
      if (ownedBy(sessionId, self)) local.publish(sessionId, frame);
      queue('topic', sessionId, ['f', frame]);
    },

    attach(conn, sessionId) {
      const at = remote(conn);
      if (!at) return local.attach(conn, sessionId);
      remoteConns.set(conn, sessionId);
      queue('process', at, ['a', conn, sessionId]);
    },

    detach(conn, sessionId) {
      const at = remote(conn);
      if (!at) return local.detach(conn, sessionId);
      remoteConns.delete(conn);
      queue('process', at, ['d', conn, sessionId]);
    },

    closeSession(sessionId, code, reason) {
      local.closeSession(sessionId, code, reason);
      queue('topic', sessionId, ['c', code, reason]);
      for (const [conn, session] of remoteConns) if (session === sessionId) remoteConns.delete(conn);
    },

    handOver(sessionId) {
      if (!published.delete(sessionId)) return;
      // After what is still queued: the session's last frames first.
      flush();
      bus.publish(topicOf(sessionId), { t: 'c.handover', sessionId } satisfies ChannelMessage);
    },

    close() {
      flush();
      published.clear();
      clearInterval(prune);
      clearInterval(presenceCheck);
      clearInterval(ownerCheck);
    },

    watch(sessionId) {
      // Cut off from Redis, this process cannot follow a session another process runs: the
      // socket is refused at once (1011), and its client reconnects, wherever it is sent.
      if (!bus.connected()) return Promise.reject(unreachable());
      let entry = watched.get(sessionId);
      if (entry) entry.count++;
      else {
        // A handler of its own: an unsubscribe still on its way must not take a new watch's.
        const handler: BusHandler = (raw, from) => relay(raw, from);
        // A subscription Redis does not confirm soon (it went away meanwhile) refuses the socket.
        const ready = withDeadline(bus.subscribe(topicOf(sessionId), handler), WATCH_TIMEOUT_MS, unreachable);
        entry = { count: 1, ready, handler };
        watched.set(sessionId, entry);
      }
      // A watch that fails counts for nothing: its socket will not `unwatch`.
      return entry.ready.catch((err) => {
        unwatch(sessionId);
        throw err;
      });
    },

    unwatch,
  };
}
