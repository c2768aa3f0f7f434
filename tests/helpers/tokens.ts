/** Tokens for tests, signed with the test secret (and some deliberately wrong ones). */
import { SignJWT, UnsecuredJWT } from 'jose';
import { mintToken } from '../../src/auth/mintToken.ts';
import type { Role } from '../../src/auth/verifyToken.ts';

export const TEST_SECRET = 'test-secret-of-at-least-thirty-two-bytes!!';
export const ISSUER = 'archety';
export const AUDIENCE = 'archety';
const key = new TextEncoder().encode(TEST_SECRET);

export function token(sub: string, options: { role?: Role; sid?: string; ttlS?: number } = {}): Promise<string> {
  return mintToken({ secret: key, issuer: ISSUER, audience: AUDIENCE, sub, ttlS: options.ttlS ?? 3600, ...options });
}

/** A token built claim by claim, for the refusal matrix. */
export async function customToken(
  claims: Record<string, unknown>,
  options: { secret?: string; exp?: number | null; nbf?: number; iss?: string; aud?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt();
  jwt.setIssuer(options.iss ?? ISSUER).setAudience(options.aud ?? AUDIENCE);
  if (options.exp !== null) jwt.setExpirationTime(options.exp ?? now + 3600);
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf);
  return jwt.sign(new TextEncoder().encode(options.secret ?? TEST_SECRET));
}

/** An unsigned token (`alg: none`). */
export function unsecuredToken(sub: string): string {
  return new UnsecuredJWT({ role: 'user' })
    .setSubject(sub)
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setExpirationTime('1h')
    .encode();
}
