/**
 * The generators' minimal WebSocket client for the socket phase: the HTTP upgrade request,
 * then the status line of the answer (and, when asked, the start of the snapshot frame);
 * whatever comes afterwards is left unread. It costs the generator an order of magnitude
 * less than a full `ws` client, so upgrade rates are the server's, not the generator's.
 */
import { connect as connectTcp, type Socket } from 'node:net';

/** Any well-formed key does: the burst client does not check the server's accept hash. */
export const UPGRADE_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/**
 * The source address of the next connection to `host`. Every socket of a burst goes to the same
 * address and port: from one source address, the kernel picks each new connection's port by
 * scanning the ports already connected there (`__inet_check_established`), and with the 10,000
 * held sockets and the bursts' 5,000 that scan took 40 % of the generator's core (`perf record`),
 * more than the upgrade itself, and only against Archety (the raw relay's port had few). Users come
 * from many addresses; so do the generators: over IPv4 loopback, connections spread over
 * 127.0.0.2–127.0.0.65, each with its own ports.
 */
const LOOPBACK_SOURCES = 64;
let nextSource = 0;
export function sourceAddressFor(host: string): string | undefined {
  if (host !== '127.0.0.1') return undefined;
  nextSource = (nextSource + 1) % LOOPBACK_SOURCES;
  return `127.0.0.${nextSource + 2}`;
}

export interface OpenJob {
  url: URL;
  token: string;
}

/** Runs `tasks` with at most `limit` at once. */
export async function pooled<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  const lane = async () => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, tasks.length)) }, lane));
  return out;
}

/**
 * A minimal WebSocket client: the upgrade request, then the status line of the answer (and,
 * with `waitSnapshot`, the first bytes of the snapshot frame). Whatever the server sends
 * afterwards is left unread in the kernel's buffers. An order of magnitude cheaper than a full client, so the
 * figures are the server's, not the generator's.
 */
export function rawUpgrade(
  job: OpenJob,
  waitSnapshot: boolean,
): Promise<{ ok: true; socket: Socket } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    const socket = connectTcp({
      host: job.url.hostname,
      port: Number(job.url.port),
      localAddress: sourceAddressFor(job.url.hostname),
    });
    socket.setNoDelay(true);
    let seen = '';
    let upgraded = false;
    let done = false;
    const finish = (r: { ok: true; socket: Socket } | { ok: false; reason: string }) => {
      if (done) return;
      done = true;
      seen = '';
      if (!r.ok) socket.destroy();
      // What the server sends an open socket afterwards (presence as others join) stays in
      // the kernel's buffers: reading it would cost the generator more than the upgrade.
      else socket.pause();
      resolve(r);
    };
    socket.on('data', (chunk: Buffer) => {
      if (done) return;
      seen += chunk.toString('latin1');
      if (!upgraded) {
        if (seen.indexOf('\r\n') < 0) return;
        const status = Number(seen.slice(9, 12));
        if (status !== 101) return finish({ ok: false, reason: `http_${status}` });
        upgraded = true;
      }
      if (!waitSnapshot || seen.includes('{"type":"snapshot"')) finish({ ok: true, socket });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, reason: err.code ?? 'socket_error' }));
    socket.on('close', () => finish({ ok: false, reason: 'closed' }));
    socket.write(
      `GET ${job.url.pathname} HTTP/1.1\r\nHost: ${job.url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${UPGRADE_KEY}\r\nSec-WebSocket-Version: 13\r\n` +
        `Sec-WebSocket-Protocol: archety.v1, bearer.${job.token}\r\n\r\n`,
    );
  });
}

export async function closeRaw(sockets: Socket[]): Promise<void> {
  const closed = sockets.map((s) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r()))));
  for (const s of sockets) s.destroy();
  await Promise.race([Promise.all(closed), new Promise<void>((r) => setTimeout(r, 10_000).unref())]);
}
