/**
 * The Socket.IO peer's client: `socket.io-client` with the WebSocket transport only, the token
 * in `auth` (checked by the server's middleware), no reconnection (a drop is counted, not
 * hidden). Edits are `edit` events; the own echo is the room's `applied` event carrying this
 * client's opId.
 */
import { io, type Socket } from 'socket.io-client';
import {
  type ClientAdapter,
  type ClientHooks,
  type ConnectOutcome,
  type ConnectSpec,
  itemId,
  labelFor,
  ownSeq,
  withTimeout,
} from '../adapter.ts';
import type { AppliedMessage, RefusedMessage } from '../tripState.ts';

export const socketioClient: ClientAdapter = {
  connect(spec: ConnectSpec, hooks: ClientHooks): Promise<ConnectOutcome> {
    const item = itemId(spec.index);
    let closing = false;
    const socket: Socket = io(spec.baseUrl, {
      transports: ['websocket'],
      auth: { token: spec.token, trip: spec.room },
      reconnection: false,
      forceNew: true,
      timeout: 30_000,
    });
    const conn = {
      hasItem: false,
      insert() {
        socket.emit('edit', { opId: `${spec.prefix}0`, item, label: labelFor(0), amount: spec.index });
      },
      edit(seq: number) {
        socket.emit('edit', { opId: `${spec.prefix}${seq}`, item, label: labelFor(seq) });
      },
      close() {
        closing = true;
        return new Promise<void>((resolve) => {
          if (!socket.connected) return resolve();
          socket.once('disconnect', () => resolve());
          socket.disconnect();
        });
      },
    };
    socket.on('applied', (m: AppliedMessage) => {
      hooks.frame(1);
      const seq = ownSeq(m.opId, spec.prefix);
      if (seq >= 0) hooks.echo(seq);
    });
    socket.on('refused', (m: RefusedMessage) => hooks.refused(ownSeq(String(m.opId), spec.prefix), m.code));
    const opened = new Promise<ConnectOutcome>((resolve) => {
      socket.once('connect', () => {
        resolve({ ok: true, conn });
        socket.on('disconnect', () => {
          if (!closing) hooks.dropped();
        });
      });
      socket.once('connect_error', (err) => {
        resolve({ ok: false, reason: err.message.slice(0, 40) });
        socket.close();
      });
    });
    return withTimeout(opened, 30_000);
  },
};
