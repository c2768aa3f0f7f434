/**
 * The peer of the miniapp benchmark: a bare uWebSockets.js server that relays every frame it
 * receives on `/room/:id` to every socket of that room (sender included, as Archety's
 * `applied` frames are), with no parsing, no state, no authentication and no storage. Its
 * socket limits match Archety's defaults so the two differ only in the work done per op.
 *
 * Run: `node --import tsx bench/rawRelay.ts` (PORT, default 0; HOST, default 127.0.0.1).
 * Prints `raw relay listening on http://HOST:PORT` and stops on SIGTERM or SIGINT.
 */
import { loadUws } from '../src/transport/loadUws.ts';

interface RoomData {
  topic: string;
}

const { uws } = loadUws(false);
const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 0);
const app = uws.App();

app.ws<RoomData>('/room/:id', {
  compression: uws.DISABLED,
  maxPayloadLength: 64 * 1024 * 32,
  maxBackpressure: 1024 * 1024,
  closeOnBackpressureLimit: 1,
  idleTimeout: 120,
  sendPingsAutomatically: true,
  upgrade(res, req, context) {
    res.upgrade(
      { topic: `m:${req.getParameter(0)}` },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open(ws) {
    ws.subscribe(ws.getUserData().topic);
  },
  message(ws, message, isBinary) {
    app.publish(ws.getUserData().topic, message, isBinary);
  },
});

app.listen(host, port, (listenSocket) => {
  if (!listenSocket) {
    process.stderr.write(`raw relay: cannot listen on ${host}:${port}\n`);
    process.exit(1);
  }
  const actual = uws.us_socket_local_port(listenSocket);
  process.stdout.write(`raw relay listening on http://${host}:${actual}\n`);
  const stop = () => {
    uws.us_listen_socket_close(listenSocket);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
});
