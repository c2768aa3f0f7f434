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
 *
 * After a reconnection to Redis, frames may have been lost in between: sockets of sessions
 * owned elsewhere are closed with 1011, and the clients resume from their last version.
 *
 * A session that moves to another process: the frames of its new owner come from another
 * process id. When its previous owner handed it over (a drain: every op it took was committed
 * and answered before it let go; `handover`), nothing changes for the sockets. Otherwise the
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

type ChannelMessage =
  | { t: 'c.send'; conn: string; frame: ServerFrame }
  | { t: 'c.attach'; conn: string; sessionId: string }
  | { t: 'c.detach'; conn: string; sessionId: string }
  | { t: 'c.publish'; sessionId: string; frame: ServerFrame }
  | { t: 'c.close'; sessionId: string; code: number; reason: string }
  | { t: 'c.handover'; sessionId: string };

const topicOf = (sessionId: string) => `s:${sessionId}`;

/** How long a socket waits for its session's bus topic to be subscribed before it is refused. */
const WATCH_TIMEOUT_MS = 3000;

const unreachable = () => new AppError('session_unavailable', 'this server cannot reach Redis; reconnect');

function withTimeout<T>(promise: Promise<T>, ms: number, error: () => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(error()), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** How long this process remembers that it published for a session. */
const PUBLISHED_MEMORY_MS = 10 * 60_000;

export interface ClusterChannel extends MiniappChannel {
  /** After this process passivated its actors (a drain): tells the others it let go cleanly. */
  handover(): void;
}

export function createClusterChannel(local: MiniappChannel, bus: Bus, log: Logger): ClusterChannel {
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
    if (message?.t === 'c.publish') {
      if (ownedBy(message.sessionId, from)) local.publish(message.sessionId, message.frame);
    } else if (message?.t === 'c.close') local.closeSession(message.sessionId, message.code, message.reason);
    else if (message?.t === 'c.handover') {
      const owner = owners.get(message.sessionId);
      if (owner?.process === from) owner.handedOver = true;
    }
  };

  bus.onMessage((raw) => {
    const message = raw as ChannelMessage;
    switch (message?.t) {
      case 'c.send':
        return local.send(message.conn, message.frame);
      case 'c.attach':
        return local.attach(message.conn, message.sessionId);
      case 'c.detach':
        return local.detach(message.conn, message.sessionId);
    }
  });

  bus.onReconnect(() => {
    if (!watched.size) return;
    log.warn({ sessions: watched.size }, 'reconnected to Redis: sockets of sessions run elsewhere resume');
    for (const sessionId of watched.keys())
      local.closeSession(sessionId, CloseCodes.internalError, 'session unavailable; reconnect');
  });

  const remote = (conn: string) => {
    const process = processOfConn(conn);
    return process === self ? undefined : process;
  };

  return {
    send(conn, frame) {
      const at = remote(conn);
      if (at) bus.send(at, { t: 'c.send', conn, frame } satisfies ChannelMessage);
      else local.send(conn, frame);
    },

    publish(sessionId, frame) {
      published.set(sessionId, Date.now());
      // Sockets here that followed another owner which did not hand over were closed instead.
      if (ownedBy(sessionId, self)) local.publish(sessionId, frame);
      bus.publish(topicOf(sessionId), { t: 'c.publish', sessionId, frame } satisfies ChannelMessage);
    },

    attach(conn, sessionId) {
      const at = remote(conn);
      if (at) bus.send(at, { t: 'c.attach', conn, sessionId } satisfies ChannelMessage);
      else local.attach(conn, sessionId);
    },

    detach(conn, sessionId) {
      const at = remote(conn);
      if (at) bus.send(at, { t: 'c.detach', conn, sessionId } satisfies ChannelMessage);
      else local.detach(conn, sessionId);
    },

    closeSession(sessionId, code, reason) {
      local.closeSession(sessionId, code, reason);
      bus.publish(topicOf(sessionId), { t: 'c.close', sessionId, code, reason } satisfies ChannelMessage);
    },

    handover() {
      for (const sessionId of published.keys())
        bus.publish(topicOf(sessionId), { t: 'c.handover', sessionId } satisfies ChannelMessage);
      published.clear();
      clearInterval(prune);
    },

    watch(sessionId) {
      // Cut off from Redis, this process cannot follow a session another process runs: the
      // socket is refused at once (1011), and its client reconnects, wherever it is sent.
      if (!bus.connected()) return Promise.reject(unreachable());
      const entry = watched.get(sessionId);
      if (entry) {
        entry.count++;
        return entry.ready;
      }
      // A handler of its own: an unsubscribe still on its way must not take a new watch's.
      const handler: BusHandler = (raw, from) => relay(raw, from);
      // A subscription Redis does not confirm soon (it went away meanwhile) refuses the socket.
      const ready = withTimeout(bus.subscribe(topicOf(sessionId), handler), WATCH_TIMEOUT_MS, unreachable);
      watched.set(sessionId, { count: 1, ready, handler });
      return ready;
    },

    unwatch(sessionId) {
      const entry = watched.get(sessionId);
      if (!entry) return;
      if (--entry.count > 0) return;
      watched.delete(sessionId);
      owners.delete(sessionId);
      // A subscription Redis did not confirm still stands (it comes back on reconnect): undone too.
      bus.unsubscribe(topicOf(sessionId), entry.handler);
    },
  };
}
