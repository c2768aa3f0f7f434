/**
 * JWT verification with jose (docs/protocol.md "JWT"): a pinned algorithm allow-list, `exp` and
 * `sub` required, issuer and audience checked, clock tolerance ≤ 5 s. Failures carry a
 * reason for the auth-failure metric; the token itself is never logged.
 */

import { webcrypto } from 'node:crypto';
import { createRemoteJWKSet, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from 'jose';
import { z } from 'zod';
import { AppError } from '../errors.ts';
import { hs256Now } from './hs256Now.ts';

export type Role = 'user' | 'relay' | 'admin';

export interface Claims {
  sub: string;
  role: Role;
  /** Opens this one miniapp session, and no other. */
  sid?: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
}

export type AuthFailureReason =
  | 'missing'
  | 'malformed'
  | 'bad_signature'
  | 'disallowed_alg'
  | 'expired'
  | 'not_yet_valid'
  | 'missing_claim'
  | 'invalid_claim'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'no_key'
  /** The JWKS could not be fetched (unreachable, timed out, not a 200 with a key set). */
  | 'jwks_unavailable';

/** A refused token: HTTP 401, with the reason for metrics. */
export class AuthError extends AppError {
  constructor(
    readonly reason: AuthFailureReason,
    message: string,
  ) {
    super('unauthorized', message);
  }
}

export interface VerifierOptions {
  /** HS256 secret (UTF-8 bytes), or a JWKS URL for RS256/ES256/EdDSA. */
  key: { secret: Uint8Array } | { jwksUrl: string };
  issuer: string;
  audience: string;
  clockToleranceS: number;
}

export interface VerifyToken {
  (token: string | undefined): Promise<Claims>;
  /**
   * The claims of `token` told without waiting: verified within the cache's time (a minute at
   * most) and not expired since, or, with an HS256 secret, a token of the plainest shape whose
   * signature and claims check out here (`hs256Now`). Undefined otherwise, refusals included:
   * then only the call can tell. Never throws.
   */
  now(token: string | undefined): Claims | undefined;
}

const claimsSchema = z.object({
  sub: z.string().min(1).max(200),
  role: z.enum(['user', 'relay', 'admin']).default('user'),
  sid: z.string().min(1).max(200).optional(),
  exp: z.number(),
});

const CACHE_SIZE = 10_000;
const CACHE_MS = 60_000;
/**
 * A token whose `kid` is not in the cached JWKS makes the set be fetched again, at most this
 * often (jose's default is 30 s): a key the issuer adds and signs with at once is accepted
 * within seconds, while tokens with made-up `kid`s cannot make us fetch more than that.
 */
const JWKS_COOLDOWN_MS = 5_000;

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function createVerifier(options: VerifierOptions): VerifyToken {
  const hmac = 'secret' in options.key;
  // A CryptoKey, imported once: given raw bytes or a KeyObject, jose (WebCrypto only since v6)
  // imports the key again on every verify.
  const key: Promise<webcrypto.CryptoKey> | JWTVerifyGetKey =
    'secret' in options.key
      ? webcrypto.subtle.importKey('raw', options.key.secret, { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
      : createRemoteJWKSet(new URL(options.key.jwksUrl), { cooldownDuration: JWKS_COOLDOWN_MS });
  const verifyOptions = {
    // Never `none`, never a symmetric algorithm against a public key (or the reverse).
    algorithms: hmac ? ['HS256'] : ['RS256', 'ES256', 'EdDSA'],
    issuer: options.issuer,
    audience: options.audience,
    clockTolerance: options.clockToleranceS,
    requiredClaims: ['exp', 'sub'],
  };

  // A relay posts every event with the same token: verifying its signature each time was a
  // visible share of the server's CPU. Verified claims are kept (bounded) until the token
  // expires, and never longer than a minute. (jose keeps a fetched JWKS for 10 minutes, so a
  // key removed from the set still verifies new tokens until then; the cache also carries
  // known keys through a JWKS outage that short.)
  const verified = new Map<string, { claims: Claims; until: number }>();

  const remember = (token: string, claims: Claims) => {
    if (verified.size >= CACHE_SIZE) verified.delete(verified.keys().next().value as string);
    verified.set(token, { claims, until: Math.min(claims.exp * 1000, Date.now() + CACHE_MS) });
  };

  /** The claims of a token verified within the cache's time and not expired since; an expired entry goes. */
  const cached = (token: string): Claims | undefined => {
    const hit = verified.get(token);
    if (!hit) return undefined;
    if (Date.now() < hit.until) return hit.claims;
    verified.delete(token);
    return undefined;
  };
  const wellFormed = (token: string) => token.length <= 8192 && JWT_SHAPE.test(token);

  const checkNow = 'secret' in options.key ? hs256Now({ ...options, secret: options.key.secret }) : undefined;
  const now = (token: string | undefined): Claims | undefined => {
    if (!token) return undefined;
    const hit = cached(token);
    if (hit) return hit;
    if (!checkNow || !wellFormed(token)) return undefined;
    const payload = checkNow(token);
    const claims = payload && claimsSchema.safeParse(payload);
    if (!claims?.success) return undefined;
    remember(token, claims.data);
    return claims.data;
  };

  const verify = async (token: string | undefined): Promise<Claims> => {
    if (!token) throw new AuthError('missing', 'a bearer token is required');
    const hit = cached(token);
    if (hit) return hit;
    if (!wellFormed(token)) throw new AuthError('malformed', 'the token is not a JWT');
    let payload: JWTPayload;
    try {
      ({ payload } =
        typeof key === 'function'
          ? await jwtVerify(token, key, verifyOptions)
          : await jwtVerify(token, await key, verifyOptions));
    } catch (err) {
      throw translateJoseError(err, !hmac);
    }
    const claims = claimsSchema.safeParse(payload);
    if (!claims.success) {
      throw new AuthError('invalid_claim', `the token's ${String(claims.error.issues[0].path[0])} claim is invalid`);
    }
    remember(token, claims.data);
    return claims.data;
  };
  return Object.assign(verify, { now });
}

function translateJoseError(err: unknown, remoteKeys: boolean): AuthError {
  if (err instanceof errors.JWTExpired) return new AuthError('expired', 'the token has expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return new AuthError('missing_claim', `the token has no ${err.claim} claim`);
    if (err.claim === 'nbf') return new AuthError('not_yet_valid', 'the token is not valid yet');
    if (err.claim === 'iss') return new AuthError('wrong_issuer', 'the token is for another issuer');
    if (err.claim === 'aud') return new AuthError('wrong_audience', 'the token is for another audience');
    return new AuthError('invalid_claim', `the token's ${err.claim} claim is invalid`);
  }
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) {
    return new AuthError('disallowed_alg', 'the token uses an algorithm that is not allowed');
  }
  if (err instanceof errors.JWSSignatureVerificationFailed)
    return new AuthError('bad_signature', 'the token signature is invalid');
  if (err instanceof errors.JWKSNoMatchingKey) return new AuthError('no_key', 'no key matches the token');
  // jose fails a JWKS fetch with a generic JOSEError (a status other than 200, not JSON), a
  // JWKSTimeout or JWKSInvalid, or fetch's own error (connection refused): none says anything
  // about the token.
  if (
    remoteKeys &&
    (err instanceof errors.JWKSTimeout ||
      err instanceof errors.JWKSInvalid ||
      !(err instanceof errors.JOSEError) ||
      err.code === errors.JOSEError.code)
  ) {
    return new AuthError('jwks_unavailable', 'the keys to verify the token could not be fetched');
  }
  return new AuthError('malformed', 'the token is malformed');
}
