/**
 * The verifier's `now`: the claims of a token told without waiting — a plain HS256 token checked
 * on the spot, or one verified moments ago — and nothing for a token it refuses or cannot tell,
 * which the (asynchronous) verification then answers. Whatever `now` accepts, jose accepts too.
 */
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createVerifier } from '../../src/auth/verifyToken.ts';
import { AUDIENCE, customToken, ISSUER, TEST_SECRET, token } from '../helpers/tokens.ts';

const verifier = () =>
  createVerifier({
    key: { secret: new TextEncoder().encode(TEST_SECRET) },
    issuer: ISSUER,
    audience: AUDIENCE,
    clockToleranceS: 0,
  });

afterEach(() => {
  vi.useRealTimers();
});

/** A token built part by part: any header, any claims, signed with `secret` (or given a signature). */
function rawToken(header: unknown, claims: unknown, secret = TEST_SECRET, signature?: string): string {
  const h = Buffer.from(JSON.stringify(header)).toString('base64url');
  const p = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const sig = signature ?? createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url');
  return `${h}.${p}.${sig}`;
}

describe('VerifyToken.now', () => {
  it('tells the claims of a plain HS256 token at once, the same as the verification', async () => {
    const t = await token('+15550001111');
    const claims = verifier().now(t);
    expect(claims).toEqual(await verifier()(t));
    expect(claims).toMatchObject({ sub: '+15550001111', role: 'user' });
    expect(verifier().now(undefined)).toBeUndefined();
  });

  it('leaves every refusal to the verification, and knows a token of another shape once it was verified', async () => {
    const verify = verifier();
    const forged = await customToken(
      { sub: '+15550001111', role: 'admin' },
      { secret: 'another-secret-of-thirty-two-bytes!!' },
    );
    expect(verify.now(forged)).toBeUndefined();
    await expect(verify(forged)).rejects.toThrow();
    expect(verify.now(forged)).toBeUndefined();
    const now = Math.floor(Date.now() / 1000);
    const withKid = rawToken(
      { alg: 'HS256', kid: 'k1' },
      { sub: '+15550004444', iss: ISSUER, aud: AUDIENCE, exp: now + 60 },
    );
    expect(verify.now(withKid), 'a header field besides alg and typ').toBeUndefined();
    await verify(withKid);
    expect(verify.now(withKid)).toMatchObject({ sub: '+15550004444' });
  });

  it('forgets a token when it expires, and a token of another shape after a minute at most', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verify = verifier();
    const shortLived = await customToken({ sub: '+15550002222' }, { exp: Math.floor(Date.now() / 1000) + 5 });
    const withKid = rawToken(
      { alg: 'HS256', kid: 'k1' },
      { sub: '+15550003333', iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 3600 },
    );
    await verify(shortLived);
    await verify(withKid);
    vi.setSystemTime(Date.now() + 6_000);
    expect(verify.now(shortLived), 'expired').toBeUndefined();
    expect(verify.now(withKid)).toBeDefined();
    vi.setSystemTime(Date.now() + 60_000);
    expect(verify.now(withKid), 'verified over a minute ago').toBeUndefined();
  });

  it('accepts no token that jose refuses, and reads the same claims (property)', async () => {
    // A clock that stands still: a token expiring the next second must not expire between the two checks.
    vi.useFakeTimers({ toFake: ['Date'] });
    const now = Math.floor(Date.now() / 1000);
    const header = fc.constantFrom<Record<string, unknown>>(
      { alg: 'HS256' },
      { alg: 'HS256' },
      { alg: 'HS256', typ: 'JWT' },
      { typ: 'JWT', alg: 'HS256' },
      { alg: 'HS384' },
      { alg: 'none' },
      { alg: 'HS256', kid: 'k' },
      { alg: 'HS256', crit: ['b64'], b64: false },
      { alg: 'HS256', typ: 5 },
    );
    /** Mostly the first (valid) value; now and then another, or none. */
    const claim = <T>(valid: T, ...others: T[]) =>
      fc.oneof(
        { arbitrary: fc.constant(valid), weight: 8 },
        { arbitrary: fc.constantFrom(...others), weight: others.length ? 1 : 0 },
        { arbitrary: fc.constant(undefined), weight: 1 },
      );
    const claims = fc.record({
      sub: claim<unknown>('+15550005555', '', 5),
      iss: claim(ISSUER, 'someone-else'),
      aud: claim<unknown>(AUDIENCE, [AUDIENCE, 'x'], ['x'], 'x', 5, [AUDIENCE, 5]),
      exp: claim<unknown>(now + 3600, now - 3600, now, now + 1, now - 1, 'soon', 1e300),
      nbf: claim<unknown>(now - 60, now + 60, now + 1, 'later'),
      iat: claim<unknown>(now, 'now'),
      role: claim('user', 'admin', 'relay', 'root'),
      sid: fc.constantFrom(undefined, undefined, 's1', ''),
    });
    const signing = fc.constantFrom('right', 'right', 'wrong secret', 'tampered', 'empty');
    let accepted = 0;
    // One verifier tells every run's token at once: it remembers the last header it accepted,
    // which must never let another header through.
    const told = verifier();
    await fc.assert(
      fc.asyncProperty(header, claims, signing, async (h, c, how) => {
        const body = Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined));
        let t = rawToken(h, body, how === 'wrong secret' ? 'another-secret-of-thirty-two-bytes!!' : TEST_SECRET);
        if (how === 'tampered') t = `${t.slice(0, -2)}${t.endsWith('A') ? 'B' : 'A'}${t.slice(-1)}`;
        if (how === 'empty') t = `${t.slice(0, t.lastIndexOf('.'))}.`;
        const quick = told.now(t);
        const verified = await verifier()(t).then(
          (v) => v,
          () => undefined,
        );
        if (quick !== undefined) {
          accepted++;
          expect(quick).toEqual(verified);
        }
        // The plainest valid tokens are all told at once.
        const plain = Object.keys(h).every((k) => k === 'alg' || (k === 'typ' && typeof h.typ === 'string'));
        if (verified !== undefined && h.alg === 'HS256' && plain) expect(quick).toEqual(verified);
      }),
      { numRuns: 400 },
    );
    expect(accepted, 'tokens told at once among the runs').toBeGreaterThan(0);
  });
});
