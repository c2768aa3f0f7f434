/** Mints HS256 tokens for the configured secret (`archety token`, tests, benchmarks). */
import { SignJWT } from 'jose';
import type { Role } from './verifyToken.ts';

export interface MintOptions {
  secret: Uint8Array;
  issuer: string;
  audience: string;
  sub: string;
  role?: Role;
  sid?: string;
  /** Lifetime in seconds. */
  ttlS: number;
}

export async function mintToken(o: MintOptions): Promise<string> {
  const jwt = new SignJWT({ role: o.role ?? 'user', ...(o.sid ? { sid: o.sid } : {}) })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(o.sub)
    .setIssuer(o.issuer)
    .setAudience(o.audience)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + o.ttlS);
  return jwt.sign(o.secret);
}

/** Parses a duration such as `90s`, `15m`, `1h`, `7d` (or plain seconds) into seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}": use e.g. 90s, 15m, 1h, 7d`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  const seconds = Number(m[1]) * unit;
  if (seconds <= 0) throw new Error('the duration must be positive');
  return seconds;
}
