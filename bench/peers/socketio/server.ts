/**
 * The Socket.IO peer: a `socket.io` server as its docs show it — the token checked in an
 * `io.use` middleware (`socket.handshake.auth.token`), each socket joined to its trip's room,
 * the trip kept in memory, every edit applied to it and sent to the room with
 * `io.to(room).emit` (the sender included, as Archety's `applied`). WebSocket transport only
 * (no long-polling), no per-message deflate (the default). Nothing is persisted.
 *
 * Run: `node --import tsx bench/peers/socketio/server.ts` (PORT, HOST, JWT_SECRET). Prints
 * `socket.io listening on http://HOST:PORT`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import { exitOnSignals, peerEnv } from '../peerAuth.ts';
import { applyEdit, type EditMessage, newTrip, type Trip } from '../tripState.ts';

const env = peerEnv();
const trips = new Map<string, Trip>();
const httpServer = createServer();
const io = new Server(httpServer, { transports: ['websocket'], serveClient: false });

io.use((socket, next) => {
  env.verify(socket.handshake.auth.token).then(
    (auth) => {
      socket.data.user = auth.user;
      next();
    },
    () => next(new Error('unauthorized')),
  );
});

io.on('connection', (socket) => {
  const room = String(socket.handshake.auth.trip ?? '');
  const user = socket.data.user as string;
  if (!room) {
    socket.disconnect(true);
    return;
  }
  let trip = trips.get(room);
  if (!trip) {
    trip = newTrip(room);
    trips.set(room, trip);
  }
  const tripOfRoom = trip;
  socket.join(room);
  socket.on('edit', (m: EditMessage) => {
    const result = applyEdit(tripOfRoom, user, m);
    if ('code' in result) socket.emit('refused', { opId: m?.opId, code: result.code });
    else io.to(room).emit('applied', result);
  });
});

httpServer.listen(env.port, env.host, () => {
  const { port } = httpServer.address() as AddressInfo;
  process.stdout.write(`socket.io listening on http://${env.host}:${port}\n`);
});
exitOnSignals(() => new Promise((resolve) => io.close(() => resolve(undefined))));
