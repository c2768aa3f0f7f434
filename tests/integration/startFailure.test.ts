/**
 * A start that fails part way leaves nothing behind: with its port taken (even by another
 * archety: uWebSockets.js would share a port unless told not to), `startServer`
 * rejects naming the address, and every connection it had opened to PostgreSQL is closed
 * (no pool, no actor, no sweep keeps the process or the database busy). A start after it, on a
 * free port, works.
 */
import net from 'node:net';
import { expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { startServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api } from '../helpers/http.ts';
import { baseEnv, startTestServer } from '../helpers/server.ts';

/** Connections to `database` other than the test's own assertion pool. */
async function serverConnections(pool: import('pg').Pool, database: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'archety'`,
    [database],
  );
  return rows[0].n;
}

it('a port in use: the start is refused naming it, and nothing it opened stays open', async () => {
  const db = await createTestDatabase();
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  const port = (taken.address() as net.AddressInfo).port;
  try {
    const config = loadConfig(baseEnv(db.url, { PORT: String(port) }));
    await expect(startServer(config, { log: createLogger({ level: 'silent', format: 'json' }) })).rejects.toThrow(
      `cannot listen on 127.0.0.1:${port}`,
    );
    await expect.poll(() => serverConnections(db.pool, db.name)).toBe(0);
  } finally {
    taken.close();
  }
  const server = await startTestServer(db.url);
  expect((await api(server.url, 'GET', '/ready')).status).toBe(200);
});

it('a port another archety listens on: refused, never shared with it', async () => {
  const db = await createTestDatabase();
  const first = await startTestServer(db.url);
  const config = loadConfig(baseEnv(db.url, { PORT: String(first.port) }));
  await expect(startServer(config, { log: createLogger({ level: 'silent', format: 'json' }) })).rejects.toThrow(
    `cannot listen on 127.0.0.1:${first.port}`,
  );
  expect((await api(first.url, 'GET', '/ready')).status).toBe(200);
});
