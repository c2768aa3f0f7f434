/**
 * The HTTP edge (docs/protocol.md "Tenancy and hostile input", README "Limits"): authentication and
 * authorization are decided from the request line and headers before any body is read; bodies
 * are limited per route (64 KiB on `/v1/miniapps`, `MAX_BODY_BYTES` on relay events), from
 * `Content-Length` before reading and while a chunked body is read; each client address has a
 * request rate and a number of bodies in flight (429 with `Retry-After` above them); `/ready`
 * answers from a cached probe instead of querying the pool for every caller.
 *
 * Requests that must be answered before their body is sent go over raw TCP, so the test
 * controls exactly which bytes reach the server.
 */
import net from 'node:net';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { UNPAUSED_BODY_MAX } from '../../src/transport/BodyReader.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15557770001';
const MINIAPP_BODY_LIMIT = 64 * 1024;
const THIRTY_MB = 30 * 1024 * 1024;

let db: TestDatabase;
/** A server as the other tests run it: the per-address limits off. */
let server: RunningServer;
/** A server with small per-address limits; each test speaks from an address of its own. */
let limited: RunningServer;
let alice: string;
let relay: string;

const REQUEST_RATE = 1;
const REQUEST_BURST = 5;
const BODIES_IN_FLIGHT = 2;

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url);
  limited = await startTestServer(db.url, {
    HTTP_REQUESTS_PER_IP_PER_SECOND: String(REQUEST_RATE),
    HTTP_REQUESTS_BURST: String(REQUEST_BURST),
    BODIES_IN_FLIGHT_PER_IP: String(BODIES_IN_FLIGHT),
  });
  alice = await token(ALICE);
  relay = await token('relay-edge', { role: 'relay' });
});

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** An open TCP connection to a server on which a test writes a request byte by byte. */
interface RawConnection {
  write(data: string | Buffer): void;
  /** The first response on the connection, once it is complete. */
  response: Promise<RawResponse>;
  /** The `n`th response (0-based) on the connection. */
  nth(n: number): Promise<RawResponse>;
}

function connect(base: string, localAddress = '127.0.0.1'): Promise<RawConnection> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port), localAddress });
    onCleanup(() => socket.destroy());
    socket.on('error', () => {});
    const parsed: RawResponse[] = [];
    const waiting = new Map<number, { done: (r: RawResponse) => void; fail: (err: Error) => void }>();
    let received = Buffer.alloc(0);
    const settle = () => {
      for (const [n, w] of waiting) {
        if (n < parsed.length) {
          waiting.delete(n);
          w.done(parsed[n]);
        }
      }
    };
    const parse = () => {
      for (;;) {
        const end = received.indexOf('\r\n\r\n');
        if (end < 0) return;
        const [statusLine, ...lines] = received.subarray(0, end).toString('latin1').split('\r\n');
        const headers = Object.fromEntries(
          lines.map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
        );
        const length = Number(headers['content-length'] ?? 0);
        if (received.length < end + 4 + length) return;
        parsed.push({
          status: Number(statusLine.split(' ')[1]),
          headers,
          body: received.subarray(end + 4, end + 4 + length).toString(),
        });
        received = received.subarray(end + 4 + length);
      }
    };
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      parse();
      settle();
    });
    socket.on('close', () => {
      settle();
      for (const w of waiting.values()) w.fail(new Error(`the connection closed after ${parsed.length} answers`));
      waiting.clear();
    });
    const nth = (n: number) => {
      const answer = new Promise<RawResponse>((done, fail) => {
        if (socket.destroyed && n >= parsed.length) fail(new Error('the connection is closed'));
        else waiting.set(n, { done, fail });
      });
      settle();
      // A test may leave a response unread (a body it never finishes); closing it then is no error.
      answer.catch(() => {});
      return answer;
    };
    const response = nth(0);
    socket.once('connect', () => resolve({ write: (data) => socket.write(data), response, nth }));
    socket.once('error', reject);
  });
}

/** Request line and headers of a POST announcing `length` bytes of JSON. */
function postHead(path: string, length: number | 'chunked', bearer?: string): string {
  return [
    `POST ${path} HTTP/1.1`,
    'Host: archety.test',
    'Content-Type: application/json',
    length === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`,
    ...(bearer ? [`Authorization: Bearer ${bearer}`] : []),
    '',
    '',
  ].join('\r\n');
}

const codeOf = (r: RawResponse) => JSON.parse(r.body).error.code;

const sessionCount = async () => Number((await db.pool.query('SELECT count(*) FROM miniapp_sessions')).rows[0].count);

describe('authentication before the body', () => {
  for (const path of ['/v1/miniapps', '/v1/relay/events']) {
    it(`answers an unauthenticated POST ${path} announcing 30 MB with 401 before the body is sent`, async () => {
      const conn = await connect(server.url);
      conn.write(`${postHead(path, THIRTY_MB)}{"app":`);
      const res = await conn.response;
      expect(res.status).toBe(401);
      expect(codeOf(res)).toBe(Codes.unauthorized);
    });
  }

  it('answers a POST with a token of the wrong role 403 before the body is sent', async () => {
    const conn = await connect(server.url);
    conn.write(`${postHead('/v1/relay/events', THIRTY_MB, alice)}{"id":`);
    const res = await conn.response;
    expect(res.status).toBe(403);
    expect(codeOf(res)).toBe(Codes.forbidden);
  });

  // A body announced as at most UNPAUSED_BODY_MAX bytes is received while the headers are
  // checked (pausing the socket costs two system calls); a larger one only once they pass.
  it('answers an unauthenticated POST announcing one byte over the unpaused size 401 before the body is sent', async () => {
    const conn = await connect(server.url);
    conn.write(`${postHead('/v1/relay/events', UNPAUSED_BODY_MAX + 1)}{"id":`);
    const res = await conn.response;
    expect(res.status).toBe(401);
    expect(codeOf(res)).toBe(Codes.unauthorized);
  });

  it('answers an unauthenticated POST announcing a small body it has not sent 401, and closes the connection', async () => {
    const conn = await connect(server.url);
    conn.write(`${postHead('/v1/relay/events', 200)}{"id":`);
    const res = await conn.response;
    expect(res.status).toBe(401);
    // What follows on the connection would be read as the rest of that body: it is closed.
    await expect(conn.nth(1)).rejects.toThrow(/closed/);
  });

  it('reads a body of exactly the unpaused size that arrives in pieces, and one a byte larger', async () => {
    const conn = await connect(server.url);
    for (const [n, size] of [UNPAUSED_BODY_MAX, UNPAUSED_BODY_MAX + 1].entries()) {
      const event = relayEvent({ sender: ALICE, text: `sized ${size}` });
      const json = JSON.stringify(event);
      const body = json + ' '.repeat(size - Buffer.byteLength(json));
      expect(Buffer.byteLength(body)).toBe(size);
      conn.write(postHead('/v1/relay/events', size, relay) + body.slice(0, 100));
      await new Promise((resolve) => setImmediate(resolve));
      conn.write(body.slice(100, 9000));
      await new Promise((resolve) => setImmediate(resolve));
      conn.write(body.slice(9000));
      const res = await conn.nth(n);
      expect(res.status).toBe(202);
      expect(JSON.parse(res.body).accepted).toEqual([event.id]);
    }
  });

  it('still reads a body that arrives in pieces after the headers', async () => {
    const body = JSON.stringify({ app: 'trip-planner', title: 'Kyoto' });
    const conn = await connect(server.url);
    conn.write(postHead('/v1/miniapps', Buffer.byteLength(body), alice) + body.slice(0, 5));
    await new Promise((resolve) => setImmediate(resolve));
    conn.write(body.slice(5, 12));
    await new Promise((resolve) => setImmediate(resolve));
    conn.write(body.slice(12));
    const res = await conn.response;
    expect(res.status).toBe(201);
    expect(JSON.parse(res.body).state.title).toBe('Kyoto');
  });

  it('answers every request of a kept-alive connection, bodies and all', async () => {
    const conn = await connect(server.url);
    for (const [n, title] of ['Rome', 'Nice', 'Bern'].entries()) {
      const body = JSON.stringify({ app: 'trip-planner', title });
      conn.write(postHead('/v1/miniapps', Buffer.byteLength(body), alice) + body);
      const res = await conn.nth(n);
      expect(res.status).toBe(201);
      expect(JSON.parse(res.body).state.title).toBe(title);
    }
  });
});

describe('body limits per route', () => {
  it('answers 413 from Content-Length alone when a miniapp body would pass 64 KiB', async () => {
    const trip = await createTrip(server.url, alice);
    for (const path of ['/v1/miniapps', `/v1/miniapps/${trip}/participants`]) {
      const conn = await connect(server.url);
      conn.write(`${postHead(path, MINIAPP_BODY_LIMIT + 1, alice)}{"app":`);
      const res = await conn.response;
      expect(res.status).toBe(413);
      expect(codeOf(res)).toBe(Codes.payload_too_large);
    }
  });

  it('refuses a miniapp body over 64 KiB that MAX_BODY_BYTES would allow, creating nothing', async () => {
    const before = await sessionCount();
    const res = await api(server.url, 'POST', '/v1/miniapps', {
      token: alice,
      body: { app: 'trip-planner', title: 'Oslo', padding: 'x'.repeat(MINIAPP_BODY_LIMIT) },
    });
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe(Codes.payload_too_large);
    expect(await sessionCount()).toBe(before);
  });

  it('answers 413 when a chunked miniapp body passes 64 KiB while it is read', async () => {
    const conn = await connect(server.url);
    conn.write(postHead('/v1/miniapps', 'chunked', alice));
    const chunk = 'x'.repeat(16 * 1024);
    for (let i = 0; i < 5; i++) conn.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
    const res = await conn.response;
    expect(res.status).toBe(413);
    expect(codeOf(res)).toBe(Codes.payload_too_large);
  });

  it('answers 413 from Content-Length alone when a relay body would pass MAX_BODY_BYTES', async () => {
    const conn = await connect(server.url);
    conn.write(`${postHead('/v1/relay/events', 32 * 1024 * 1024 + 1, relay)}{"id":`);
    const res = await conn.response;
    expect(res.status).toBe(413);
    expect(codeOf(res)).toBe(Codes.payload_too_large);
  });

  it('closes the connection, answering nothing, when Content-Length has ten digits or more (uWS refuses it before any handler), and goes on serving', async () => {
    for (const length of [2 ** 40, 1e10]) {
      const conn = await connect(server.url);
      conn.write(`${postHead('/v1/relay/events', length, relay)}{"id":`);
      await expect(conn.response).rejects.toThrow('closed after 0 answers');
    }
    const res = await api(server.url, 'POST', '/v1/relay/events', {
      token: relay,
      body: relayEvent({ sender: ALICE, text: 'still here' }),
    });
    expect(res.status).toBe(202);
  });

  it('takes relay bodies over 64 KiB within MAX_BODY_BYTES', async () => {
    const big = { ...relayEvent({ sender: ALICE, text: 'a long one' }), note: 'z'.repeat(MINIAPP_BODY_LIMIT) };
    const res = await api(server.url, 'POST', '/v1/relay/events', { token: relay, body: big });
    expect(res.status).not.toBe(413);
  });
});

describe('limits per client address', () => {
  it('answers 429 rate_limited with Retry-After past the request burst, and not to other addresses', async () => {
    const get = async (localAddress: string) => {
      const conn = await connect(limited.url, localAddress);
      conn.write('GET /health HTTP/1.1\r\nHost: archety.test\r\n\r\n');
      return conn.response;
    };
    const statuses: number[] = [];
    for (let i = 0; i < REQUEST_BURST; i++) statuses.push((await get('127.0.0.3')).status);
    expect(statuses).toEqual(Array(REQUEST_BURST).fill(200));
    const refused = await get('127.0.0.3');
    expect(refused.status).toBe(429);
    expect(codeOf(refused)).toBe(Codes.rate_limited);
    expect(refused.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    expect((await get('127.0.0.4')).status).toBe(200);
  });

  it('answers 429 once an address has BODIES_IN_FLIGHT_PER_IP bodies in flight, and takes bodies again when one ends', async () => {
    const address = '127.0.0.5';
    const event = JSON.stringify(relayEvent({ sender: ALICE, text: 'slow body' }));
    const slow = await Promise.all(
      Array.from({ length: BODIES_IN_FLIGHT }, async () => {
        const conn = await connect(limited.url, address);
        conn.write(postHead('/v1/relay/events', Buffer.byteLength(event), relay) + event.slice(0, 10));
        return conn;
      }),
    );
    /** One more complete request from the address: 400 when its body is read, 429 when refused. */
    const another = async () => {
      const conn = await connect(limited.url, address);
      conn.write(`${postHead('/v1/relay/events', 2, relay)}[]`);
      return conn.response;
    };
    let refused: RawResponse | undefined;
    await expect
      .poll(async () => {
        refused = await another();
        return refused.status;
      })
      .toBe(429);
    expect(codeOf(refused as RawResponse)).toBe(Codes.rate_limited);
    expect((refused as RawResponse).headers['retry-after']).toMatch(/^[1-9]\d*$/);

    slow[0].write(event.slice(10));
    expect((await slow[0].response).status).toBe(202);
    const taken = await another();
    expect(taken.status).toBe(400);
    expect(codeOf(taken)).toBe(Codes.invalid_json);
  });
});

describe('/ready', () => {
  it('answers a hundred concurrent callers from one probe at a time, with the pool figures', async () => {
    let inFlight = 0;
    let most = 0;
    let probes = 0;
    const original = server.pool.query.bind(server.pool) as (...args: unknown[]) => Promise<unknown>;
    const spy = vi.spyOn(server.pool, 'query').mockImplementation(((...args: unknown[]) => {
      if (args[0] !== 'SELECT 1') return original(...args);
      probes++;
      most = Math.max(most, ++inFlight);
      return original(...args).finally(() => inFlight--);
    }) as never);
    try {
      const answers = await Promise.all(Array.from({ length: 100 }, () => api(server.url, 'GET', '/ready')));
      for (const a of answers) {
        expect(a.status).toBe(200);
        expect(a.body.db).toMatchObject({ total: expect.any(Number), waiting: expect.any(Number), reachable: true });
      }
    } finally {
      spy.mockRestore();
    }
    expect(most).toBeLessThanOrEqual(1);
    expect(probes).toBeLessThan(10);
  });
});
