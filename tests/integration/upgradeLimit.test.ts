/**
 * The upgrade limit per client address (README "Limits", docs/protocol.md "WebSocket"): past
 * `UPGRADES_BURST` upgrades, at `UPGRADES_PER_IP_PER_SECOND`, an address is answered HTTP 429
 * with `Retry-After` and no socket is opened; other addresses are not affected, and the
 * address is accepted again once `Retry-After` has passed.
 */

import { beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { wsUrl } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15551230001';
/** One token a second, five saved up: a burst of 5 at once, then 1 a second. */
const RATE = 1;
const BURST = 5;

let server: RunningServer;
let tripId: string;
let alice: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url, {
    UPGRADES_PER_IP_PER_SECOND: String(RATE),
    UPGRADES_BURST: String(BURST),
  });
  alice = await token(ALICE);
  tripId = await createTrip(server.url, alice);
});

type Attempt =
  | { opened: true; ws: WebSocket }
  | { opened: false; status: number; retryAfter: string | undefined; body: string };

/** One upgrade attempt from `localAddress` (any 127.0.0.0/8 address reaches the loopback). */
function attempt(localAddress = '127.0.0.1'): Promise<Attempt> {
  const ws = new WebSocket(wsUrl(server.url, tripId), ['archety.v1', `bearer.${alice}`], { localAddress });
  return new Promise((resolve, reject) => {
    ws.on('open', () => resolve({ opened: true, ws }));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        const retryAfter = res.headers['retry-after'];
        resolve({ opened: false, status: res.statusCode ?? 0, retryAfter: retryAfter as string | undefined, body });
      });
    });
    ws.on('error', reject);
  });
}

function closeAll(attempts: Attempt[]): void {
  for (const a of attempts) if (a.opened) a.ws.close();
}

describe('the upgrade limit per address', () => {
  it('opens the upgrades within the burst and answers the rest 429 rate_limited with an integer Retry-After', async () => {
    const attempts = await Promise.all(Array.from({ length: BURST + 3 }, () => attempt()));
    try {
      const opened = attempts.filter((a) => a.opened);
      const refused = attempts.filter((a): a is Extract<Attempt, { opened: false }> => !a.opened);
      expect(opened).toHaveLength(BURST);
      expect(refused).toHaveLength(3);
      for (const r of refused) {
        expect(r.status).toBe(429);
        expect(r.retryAfter).toMatch(/^\d+$/);
        expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
        expect(JSON.parse(r.body).error.code).toBe(Codes.rate_limited);
      }
    } finally {
      closeAll(attempts);
    }
  });

  it('does not count one address against another', async () => {
    const refused = await attempt();
    expect(refused.opened).toBe(false);
    const other = await attempt('127.0.0.2');
    closeAll([refused, other]);
    expect(other.opened).toBe(true);
  });

  it('accepts the address again once Retry-After has passed', async () => {
    const refused = await attempt();
    if (refused.opened) throw new Error('expected the address to be still limited');
    // Refused attempts take no token, so retrying until one opens does not delay it; the bound
    // is what Retry-After promised, plus slack for a loaded machine.
    let again: WebSocket | undefined;
    await expect
      .poll(
        async () => {
          const a = await attempt();
          if (a.opened) again = a.ws;
          return a.opened;
        },
        { timeout: Number(refused.retryAfter) * 1000 + 2000, interval: 100 },
      )
      .toBe(true);
    again?.close();
  });
});
