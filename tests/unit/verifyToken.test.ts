/**
 * The verifier's `known`: the claims of a token verified moments ago, told without waiting, and
 * nothing for a token it has not verified, one it refused, or one that expired since.
 */
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

describe('VerifyToken.known', () => {
  it('knows a token only once it was verified, with the same claims', async () => {
    const verify = verifier();
    const t = await token('+15550001111');
    expect(verify.known(t)).toBeUndefined();
    expect(verify.known(undefined)).toBeUndefined();
    const claims = await verify(t);
    expect(verify.known(t)).toEqual(claims);
    expect(claims).toMatchObject({ sub: '+15550001111', role: 'user' });
  });

  it('never knows a refused token', async () => {
    const verify = verifier();
    const forged = await customToken(
      { sub: '+15550001111', role: 'admin' },
      { secret: 'another-secret-of-thirty-two-bytes!!' },
    );
    await expect(verify(forged)).rejects.toThrow();
    expect(verify.known(forged)).toBeUndefined();
  });

  it('forgets a token when it expires, and after a minute at most', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verify = verifier();
    const shortLived = await customToken({ sub: '+15550002222' }, { exp: Math.floor(Date.now() / 1000) + 5 });
    const longLived = await token('+15550003333');
    await verify(shortLived);
    await verify(longLived);
    vi.setSystemTime(Date.now() + 6_000);
    expect(verify.known(shortLived), 'expired').toBeUndefined();
    expect(verify.known(longLived)).toBeDefined();
    vi.setSystemTime(Date.now() + 60_000);
    expect(verify.known(longLived), 'verified over a minute ago').toBeUndefined();
  });
});
