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
 */
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { CloseCodes } from '../errors.ts';
import type { MiniappChannel } from '../miniapp/createMiniappKind.ts';
import type { Logger } from '../observability/logger.ts';
import type { Bus, BusHandler } from './Bus.ts';
import { processOfConn } from './processId.ts';

type ChannelMessage =
  | { t: 'c.send'; conn: string; frame: ServerFrame }
  | { t: 'c.attach'; conn: string; sessionId: string }
  | { t: 'c.detach'; conn: string; sessionId: string }
  | { t: 'c.publish'; sessionId: string; frame: ServerFrame }
  | { t: 'c.close'; sessionId: string; code: number; reason: string };

const topicOf = (sessionId: string) => `s:${sessionId}`;

export function createClusterChannel(local: MiniappChannel, bus: Bus, log: Logger): MiniappChannel {
  const self = bus.self;
  /** Sockets of each watched session here, and its topic subscription. */
  const watched = new Map<string, { count: number; ready: Promise<void>; handler: BusHandler }>();

  const relay: BusHandler = (raw, from) => {
    // This process's own publications reached its sockets already, through uWS.
    if (from === self) return;
    const message = raw as ChannelMessage;
    if (message?.t === 'c.publish') local.publish(message.sessionId, message.frame);
    else if (message?.t === 'c.close') local.closeSession(message.sessionId, message.code, message.reason);
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
      local.publish(sessionId, frame);
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

    watch(sessionId) {
      const entry = watched.get(sessionId);
      if (entry) {
        entry.count++;
        return entry.ready;
      }
      // A handler of its own: an unsubscribe still on its way must not take a new watch's.
      const handler: BusHandler = (raw, from) => relay(raw, from);
      const ready = bus.subscribe(topicOf(sessionId), handler);
      watched.set(sessionId, { count: 1, ready, handler });
      return ready;
    },

    unwatch(sessionId) {
      const entry = watched.get(sessionId);
      if (!entry) return;
      if (--entry.count > 0) return;
      watched.delete(sessionId);
      // A subscription Redis did not confirm still stands (it comes back on reconnect): undone too.
      bus.unsubscribe(topicOf(sessionId), entry.handler);
    },
  };
}
