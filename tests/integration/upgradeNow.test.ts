/**
 * Upgrades decided at once: a socket whose token checks out without waiting (a plain HS256
 * token, or one verified within the last minute), for a live session it may open, is upgraded
 * inside uWebSockets.js' own callback (`authorizeNow`), where the response is corked; every
 * other upgrade waits for `authorize` and completes later, uncorked
 * (uWebSockets.js then prints its "must be made from within a corked callback" warning, which
 * is how this test tells the two paths apart in a server process of its own). Refusals never
 * take the quick path; the caps hold on it (socketCaps.test.ts opens a user's sockets on it).
 */
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.ts';
import { createTrip } from '../helpers/http.ts';
import { baseEnv, spawnServer } from '../helpers/server.ts';
import { type Opened, openSocket, refusedStatus } from '../helpers/socket.ts';
import { AUDIENCE, ISSUER, TEST_SECRET, token } from '../helpers/tokens.ts';

const ALICE = '+15557700001';
const BOB = '+15557700002';
const CAROL = '+15557700003';
const UNCORKED = /must be made from within a corked callback/g;

describe('an upgrade decided at once', () => {
  it('opens a socket whose token checks out at once to a live session in uWebSockets.js’ callback, and refuses the rest as before', async () => {
    const db = await createTestDatabase();
    const server = await spawnServer(baseEnv(db.url, { MAX_SOCKETS_PER_USER: '6', MAX_SOCKETS_PER_SESSION: '20' }));
    /** Warnings printed so far, once the server's stderr has had time to arrive. */
    const uncorked = async () => {
      await new Promise((r) => setTimeout(r, 150));
      return server.output().match(UNCORKED)?.length ?? 0;
    };
    const [alice, bob, carol] = await Promise.all([token(ALICE), token(BOB), token(CAROL)]);
    const id = await createTrip(server.url, alice, { participants: [BOB] });
    const other = await createTrip(server.url, alice);
    const open = async (as: string): Promise<Opened> => {
      const s = await openSocket(server.url, id, as);
      await s.next('snapshot');
      return s;
    };
    const sockets = [await open(alice)];
    // The first socket wakes the session: the upgrade waits for it, and completes later.
    expect(await uncorked()).toBe(1);
    for (let i = 0; i < 5; i++) sockets.push(await open(alice));
    expect(await uncorked(), 'upgrades that waited for nothing').toBe(1);
    // Past MAX_SOCKETS_PER_USER, refused on the quick path too, with the cap's status.
    expect(await refusedStatus(server.url, id, alice)).toBe(429);
    // Bob's token was never seen: a plain HS256 token, checked on the spot.
    sockets.push(await open(bob));
    expect(await uncorked()).toBe(1);
    // A token of another shape (a `kid` in its header) waits for jose the first time only.
    const withKid = await new SignJWT({ role: 'user' })
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .setSubject(BOB)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(TEST_SECRET));
    sockets.push(await open(withKid));
    expect(await uncorked()).toBe(2);
    sockets.push(await open(withKid));
    expect(await uncorked()).toBe(2);
    // Carol is no participant: refused both times, her token verified or not.
    expect(await refusedStatus(server.url, id, carol)).toBe(403);
    expect(await refusedStatus(server.url, id, carol)).toBe(403);
    // A share link opens its own session only, on either path.
    const link = await token(CAROL, { sid: id });
    sockets.push(await open(link));
    sockets.push(await open(link));
    expect(await refusedStatus(server.url, other, link)).toBe(403);
    // Every socket is a working one: an op of the last reaches the first.
    const last = sockets[sockets.length - 1];
    const snapshot = last.frames.find((f) => f.type === 'snapshot');
    last.send({
      type: 'op',
      opId: 'quick-1',
      baseVersion: snapshot?.type === 'snapshot' ? snapshot.version : 0,
      op: { kind: 'set', path: ['title'], value: 'Porto' },
    });
    expect(await last.answer('quick-1')).toMatchObject({ type: 'applied' });
    await expect.poll(() => sockets[0].frames.some((f) => f.type === 'applied' && f.opId === 'quick-1')).toBe(true);
    for (const s of sockets) s.close();
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
  }, 60_000);
});
