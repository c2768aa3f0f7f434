/**
 * Token checking for the peer servers: the same HS256 JWTs the Archety server accepts
 * (`JWT_SECRET`, issuer and audience `archety`), verified with `jose` as each peer's docs
 * suggest for their auth hook (Socket.IO middleware, Colyseus `onAuth`, Hocuspocus
 * `onAuthenticate`). Archety itself verifies the same tokens on the upgrade.
 */
import { jwtVerify } from 'jose';

export interface PeerEnv {
  host: string;
  port: number;
  verify(token: unknown): Promise<{ user: string }>;
}

/** Reads HOST, PORT and JWT_SECRET (required), JWT_ISSUER and JWT_AUDIENCE from the environment. */
export function peerEnv(env: NodeJS.ProcessEnv = process.env): PeerEnv {
  if (!env.JWT_SECRET) throw new Error('JWT_SECRET is required');
  const key = new TextEncoder().encode(env.JWT_SECRET);
  const issuer = env.JWT_ISSUER ?? 'archety';
  const audience = env.JWT_AUDIENCE ?? 'archety';
  return {
    host: env.HOST ?? '127.0.0.1',
    port: Number(env.PORT ?? 0),
    async verify(token) {
      if (typeof token !== 'string' || !token) throw new Error('missing token');
      const { payload } = await jwtVerify(token, key, {
        algorithms: ['HS256'],
        issuer,
        audience,
        clockTolerance: 5,
        requiredClaims: ['exp', 'sub'],
      });
      return { user: String(payload.sub) };
    },
  };
}

/** Exits on SIGTERM / SIGINT after `stop` (bounded: the benchmark waits for the exit). */
export function exitOnSignals(stop: () => Promise<unknown> | unknown): void {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      setTimeout(() => process.exit(0), 3000).unref();
      Promise.resolve()
        .then(stop)
        .finally(() => process.exit(0));
    });
  }
}
