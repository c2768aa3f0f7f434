/**
 * An HS256 token checked without waiting: jose verifies through WebCrypto, which is always
 * asynchronous, and an upgrade that waits completes uncorked at three to four times the CPU
 * (`socketEndpoint.ts`, `upgradeLater`). This check only ever accepts: it returns the payload
 * of a token of the plainest shape — header `{"alg":"HS256"}` with at most `typ` besides, every
 * part in canonical base64url, a valid signature, `iss`, `aud`, `sub` and `exp` present and
 * right, `nbf` and `iat` numbers where present — and undefined for anything else, which then
 * goes to jose, whose answer (and error) stands. A unit property test holds every token it
 * accepts to be accepted by jose with the same payload.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface Hs256Options {
  secret: Uint8Array;
  issuer: string;
  audience: string;
  clockToleranceS: number;
}

const strict = new TextDecoder('utf-8', { fatal: true });

/** The JSON object a canonical base64url part holds, or undefined. */
function objectOf(part: string): Record<string, unknown> | undefined {
  const bytes = Buffer.from(part, 'base64url');
  if (bytes.toString('base64url') !== part) return undefined;
  try {
    const value: unknown = JSON.parse(strict.decode(bytes));
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** `{"alg":"HS256"}`, with at most a string `typ` besides. */
function isPlainHeader(part: string): boolean {
  const header = objectOf(part);
  if (header?.alg !== 'HS256') return false;
  for (const k of Object.keys(header))
    if (k !== 'alg' && !(k === 'typ' && typeof header.typ === 'string')) return false;
  return true;
}

export function hs256Now(options: Hs256Options): (token: string) => Record<string, unknown> | undefined {
  const secret = Buffer.from(options.secret);
  let plainHeader: string | undefined;
  return (token) => {
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    const [h, p, s] = parts;
    // Every token of one issuer has the same header: the last one accepted is not parsed again.
    if (h !== plainHeader) {
      if (!isPlainHeader(h)) return undefined;
      plainHeader = h;
    }
    const expected = createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url');
    if (s.length !== expected.length || !timingSafeEqual(Buffer.from(s), Buffer.from(expected))) return undefined;
    const claims = objectOf(p);
    if (!claims) return undefined;
    const { iss, aud, sub, exp, nbf, iat } = claims;
    if (iss !== options.issuer) return undefined;
    if (!(aud === options.audience || (Array.isArray(aud) && aud.includes(options.audience)))) return undefined;
    if (!Object.hasOwn(claims, 'sub') || sub === undefined) return undefined;
    const now = Math.floor(Date.now() / 1000);
    const tolerance = options.clockToleranceS;
    if (!isNumber(exp) || exp <= now - tolerance) return undefined;
    if (nbf !== undefined && (!isNumber(nbf) || nbf > now + tolerance)) return undefined;
    if (iat !== undefined && !isNumber(iat)) return undefined;
    return claims;
  };
}
