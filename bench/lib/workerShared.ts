/** What a load-generator process's parts share: its event-loop histogram, its tokens, timing. */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mintToken } from '../../src/auth/mintToken.ts';
import type { TokenSecret } from './protocol.ts';

const TOKEN_TTL_S = 3 * 3600;

/** This process's event-loop delay; reset at the start of every measured window. */
export const eld = monitorEventLoopDelay({ resolution: 5 });
eld.enable();

let workerId = 0;
let jwt: TokenSecret | undefined;
let jwtKey: Uint8Array | undefined;
let tokenSerial = 0;

export function configureTokens(id: number, secret: TokenSecret): void {
  workerId = id;
  jwt = secret;
  jwtKey = new TextEncoder().encode(secret.secret);
}

export function getWorkerId(): number {
  return workerId;
}

/** A token for `user`; with `distinct`, one no other socket of the run gets. */
export async function tokenFor(user: string, distinct: boolean): Promise<string> {
  if (!jwt || !jwtKey) throw new Error('worker not initialised');
  // A distinct lifetime gives a distinct token (and signature) per socket when asked.
  const ttlS = distinct ? TOKEN_TTL_S + workerId * 1_000_000 + tokenSerial++ : TOKEN_TTL_S;
  return mintToken({ secret: jwtKey, issuer: jwt.issuer, audience: jwt.audience, sub: user, ttlS });
}

export function wsBase(baseUrl: string): string {
  return baseUrl.replace(/^http/, 'ws');
}

/** Calls `fn` at epoch time `epochMs` (the parent gives every worker the same start). */
export function at(epochMs: number, fn: () => void): void {
  setTimeout(fn, Math.max(0, epochMs - Date.now()));
}
