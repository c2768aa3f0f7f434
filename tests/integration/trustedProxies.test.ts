/**
 * Behind our own proxy (`TRUSTED_PROXIES`), the per-address limits key on the client that the
 * proxy names in `X-Forwarded-For`, for requests and for socket upgrades alike: two clients
 * behind one proxy have a budget each. A client that is not one of our proxies is limited by
 * its own address whatever it writes in the header. Refused upgrades carry `x-request-id` like
 * every other HTTP answer.
 */
import http from 'node:http';
import { beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { wsUrl } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const BURST = 3;

let behindProxy: RunningServer;
let trip: string;
let alice: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  behindProxy = await startTestServer(db.url, {
    TRUSTED_PROXIES: '127.0.0.1',
    HTTP_REQUESTS_PER_IP_PER_SECOND: '1',
    HTTP_REQUESTS_BURST: String(BURST),
    UPGRADES_PER_IP_PER_SECOND: '1',
    UPGRADES_BURST: String(BURST),
  });
  alice = await token('+15557770101');
  // Created through another server on the same database: the limited one's budgets stay whole.
  const plain = await startTestServer(db.url);
  trip = await createTrip(plain.url, alice);
});

/** GET /health from `localAddress`, with these headers; the status. */
function get(localAddress: string, headers: Record<string, string> = {}): Promise<number> {
  const { hostname, port } = new URL(behindProxy.url);
  return new Promise((resolve, reject) => {
    http
      .get({ host: hostname, port, path: '/health', localAddress, headers, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
}

async function statuses(n: number, localAddress: string, headers: Record<string, string> = {}): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await get(localAddress, headers));
  return out;
}

/** Upgrades to the trip's socket from `localAddress`; the status of the answer (101 when it opened). */
function upgrade(
  localAddress: string,
  headers: Record<string, string>,
  auth = alice,
): Promise<{ status: number; requestId?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(behindProxy.url, trip), ['archety.v1', `bearer.${auth}`], {
      localAddress,
      headers,
    });
    ws.on('open', () => {
      ws.close();
      resolve({ status: 101, body: '' });
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c) => {
        body += c;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, requestId: res.headers['x-request-id'] as string, body }),
      );
    });
    ws.on('error', reject);
  });
}

describe('TRUSTED_PROXIES', () => {
  it('gives each client behind a trusted proxy its own request budget', async () => {
    const first = { 'x-forwarded-for': '203.0.113.7' };
    expect(await statuses(BURST, '127.0.0.1', first)).toEqual(Array(BURST).fill(200));
    expect(await get('127.0.0.1', first)).toBe(429);
    // Another client through the same proxy is not affected.
    expect(await get('127.0.0.1', { 'x-forwarded-for': '203.0.113.8' })).toBe(200);
    // Writing a different address left of what the proxy appended does not help the first.
    expect(await get('127.0.0.1', { 'x-forwarded-for': '198.51.100.50, 203.0.113.7' })).toBe(429);
  });

  it('limits a client that is not a trusted proxy by its own address, whatever X-Forwarded-For says', async () => {
    const spoofed = (i: number) => ({ 'x-forwarded-for': `198.51.100.${i}` });
    const answers = [];
    for (let i = 0; i <= BURST; i++) answers.push(await get('127.0.0.2', spoofed(i)));
    expect(answers).toEqual([...Array(BURST).fill(200), 429]);
  });

  it('gives each client behind a trusted proxy its own upgrade budget', async () => {
    const client = { 'x-forwarded-for': '203.0.113.20' };
    for (let i = 0; i < BURST; i++) expect((await upgrade('127.0.0.1', client)).status).toBe(101);
    const refused = await upgrade('127.0.0.1', client);
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.body).error.code).toBe(Codes.rate_limited);
    expect((await upgrade('127.0.0.1', { 'x-forwarded-for': '203.0.113.21' })).status).toBe(101);
  });
});

describe('a refused upgrade', () => {
  it('carries x-request-id: the one the client sent, or a new one', async () => {
    const echoed = await upgrade('127.0.0.3', { 'x-request-id': 'upgrade-check-1' }, 'not-a-token');
    expect(echoed.status).toBe(401);
    expect(echoed.requestId).toBe('upgrade-check-1');
    const made = await upgrade('127.0.0.3', {}, 'not-a-token');
    expect(made.status).toBe(401);
    expect(made.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });
});
