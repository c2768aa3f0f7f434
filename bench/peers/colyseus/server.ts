/**
 * The Colyseus peer: `@colyseus/core` with `@colyseus/ws-transport` (the `colyseus` meta
 * package pulls a GitHub dependency that cannot be installed here). One `Trip` room per trip,
 * matched with `filterBy(['trip'])`; the token checked in the room's static `onAuth` (the form
 * its docs recommend: before the room is touched); the trip kept in the room, in memory, as a
 * plain object; each edit handled by `onMessage('edit')`, applied to it and sent to every
 * client of the room with `broadcast` (the sender included).
 *
 * The room keeps no `@colyseus/schema` state: Colyseus would then also send the state's patches
 * at `patchRate`, i.e. a second copy of every edit; with `onMessage` + `broadcast` each edit is
 * sent once, as on the other servers. Nothing is persisted.
 *
 * Run: `node --import tsx bench/peers/colyseus/server.ts` (PORT, HOST, JWT_SECRET). Prints
 * `colyseus listening on http://HOST:PORT`.
 */
import type { AddressInfo } from 'node:net';
import { type AuthContext, type Client, Room, Server } from '@colyseus/core';
import { WebSocketTransport } from '@colyseus/ws-transport';
import { exitOnSignals, peerEnv } from '../peerAuth.ts';
import { applyEdit, type EditMessage, newTrip, type Trip } from '../tripState.ts';

const env = peerEnv();

class TripRoom extends Room {
  private trip: Trip = newTrip('');

  static override async onAuth(token: string, _options: unknown, _context: AuthContext) {
    return env.verify(token);
  }

  override onCreate(options: { trip?: string }) {
    this.trip = newTrip(String(options.trip ?? ''));
    this.onMessage('edit', (client: Client, m: EditMessage) => {
      const result = applyEdit(this.trip, (client.auth as { user: string }).user, m);
      if ('code' in result) client.send('refused', { opId: m?.opId, code: result.code });
      else this.broadcast('applied', result);
    });
  }
}

const transport = new WebSocketTransport();
const server = new Server({ transport, greet: false });
server.define('trip', TripRoom).filterBy(['trip']);
await server.listen(env.port, env.host);
const { port } = (transport as unknown as { server: { address(): AddressInfo } }).server.address();
process.stdout.write(`colyseus listening on http://${env.host}:${port}\n`);
exitOnSignals(() => server.gracefullyShutdown(false));
