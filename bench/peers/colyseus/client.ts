/**
 * The Colyseus peer's client: `@colyseus/sdk` (the client of Colyseus 0.17+; `colyseus.js`
 * stopped at 0.16), with the token in `client.auth.token` (sent with the matchmaking request
 * and checked by the room's `onAuth`), `joinOrCreate('trip', {trip})` into the trip's room,
 * `room.send('edit', …)`; the own echo is the room's `applied` message carrying this client's
 * opId.
 */
import { Client, type Room } from '@colyseus/sdk';
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

export const colyseusClient: ClientAdapter = {
  async connect(spec: ConnectSpec, hooks: ClientHooks): Promise<ConnectOutcome> {
    const item = itemId(spec.index);
    const client = new Client(spec.baseUrl);
    client.auth.token = spec.token;
    let closing = false;
    const joined = client.joinOrCreate('trip', { trip: spec.room }).then(
      (room: Room): ConnectOutcome => {
        room.onMessage('applied', (m: AppliedMessage) => {
          hooks.frame(1);
          const seq = ownSeq(m.opId, spec.prefix);
          if (seq >= 0) hooks.echo(seq);
        });
        room.onMessage('refused', (m: RefusedMessage) => hooks.refused(ownSeq(String(m.opId), spec.prefix), m.code));
        room.onLeave(() => {
          if (!closing) hooks.dropped();
        });
        return {
          ok: true,
          conn: {
            hasItem: false,
            insert() {
              room.send('edit', { opId: `${spec.prefix}0`, item, label: labelFor(0), amount: spec.index });
            },
            edit(seq: number) {
              room.send('edit', { opId: `${spec.prefix}${seq}`, item, label: labelFor(seq) });
            },
            async close() {
              closing = true;
              await room.leave(true).catch(() => undefined);
            },
          },
        };
      },
      (err: Error & { code?: number }): ConnectOutcome => ({
        ok: false,
        reason: `${err.code ?? ''} ${err.message}`.trim().slice(0, 40),
      }),
    );
    return withTimeout(joined, 30_000);
  },
};
