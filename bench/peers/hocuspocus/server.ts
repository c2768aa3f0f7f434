/**
 * The Hocuspocus peer: `@hocuspocus/server` as its docs show it — one Yjs document per trip,
 * the token checked in `onAuthenticate`, no extension (so no persistence: the document lives
 * in memory while clients are connected). Hocuspocus applies each client's Yjs update to the
 * document and broadcasts it to every connection of the document (the sender included),
 * merging the updates that arrive in one event-loop turn (its default `flushDelay: 0`).
 *
 * Run: `node --import tsx bench/peers/hocuspocus/server.ts` (PORT, HOST, JWT_SECRET). Prints
 * `hocuspocus listening on http://HOST:PORT`.
 */
import type { AddressInfo } from 'node:net';
import { Server } from '@hocuspocus/server';
import { exitOnSignals, peerEnv } from '../peerAuth.ts';

const env = peerEnv();
const server = new Server({
  name: 'bench',
  address: env.host,
  port: env.port,
  quiet: true,
  // The benchmark stops it with SIGTERM; its own handler would do the same.
  stopOnSignals: false,
  async onAuthenticate({ token }) {
    return env.verify(token);
  },
});
await server.listen();
const { port } = server.httpServer.address() as AddressInfo;
process.stdout.write(`hocuspocus listening on http://${env.host}:${port}\n`);
exitOnSignals(() => server.destroy());
