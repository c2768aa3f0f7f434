/**
 * A TCP proxy a test can cut, to take a service (Redis, PostgreSQL) away from one client
 * without stopping the service that other tests share. Put its `url` where the client would
 * have the service's: `cut()` resets every connection through it and refuses new ones (the
 * client sees its peer vanish and fails to reconnect), `restore()` lets connections through
 * again on the same port. It is closed when the test file's tests are done.
 */
import net from 'node:net';
import { onCleanup } from './cleanup.ts';

export interface TcpProxy {
  /** `targetUrl` with its host and port replaced by the proxy's (user, password, path kept). */
  readonly url: string;
  /** Resets every open connection and refuses new ones until `restore()`. */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** Starts a proxy on a free loopback port in front of `targetUrl` (any `scheme://host:port/…`). */
export async function startTcpProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  if (!target.port) throw new Error(`startTcpProxy needs a URL with a port, got ${target.protocol}//${target.host}`);
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const port = Number(target.port);
  const sockets = new Set<net.Socket>();
  let isCut = false;

  const track = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // A reset from either side is the point of this proxy, not a test failure.
    socket.on('error', () => socket.destroy());
  };

  const server = net.createServer((client) => {
    track(client);
    if (isCut) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect({ host, port });
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });

  const proxied = new URL(targetUrl);
  proxied.hostname = '127.0.0.1';
  proxied.port = String((server.address() as net.AddressInfo).port);

  const resetAll = (): void => {
    for (const socket of sockets) socket.resetAndDestroy();
  };
  const close = async (): Promise<void> => {
    if (!server.listening) return;
    resetAll();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  onCleanup(close);

  return {
    url: proxied.toString(),
    cut() {
      isCut = true;
      resetAll();
    },
    restore() {
      isCut = false;
    },
    close,
  };
}
