/** Op accounting: every op sent is applied, conflicted, refused or still in flight. */
import type { OpAccount } from './protocol.ts';
import { fmt } from './stats.ts';

export function emptyAccount(): OpAccount {
  return { sent: 0, applied: 0, conflict: 0, error: 0, inFlight: 0, errorCodes: {}, unmatched: 0 };
}

export function addAccount(into: OpAccount, a: OpAccount): OpAccount {
  into.sent += a.sent;
  into.applied += a.applied;
  into.conflict += a.conflict;
  into.error += a.error;
  into.inFlight += a.inFlight;
  into.unmatched += a.unmatched;
  for (const [k, v] of Object.entries(a.errorCodes)) into.errorCodes[k] = (into.errorCodes[k] ?? 0) + v;
  return into;
}

export function balanced(a: OpAccount): boolean {
  return a.sent === a.applied + a.conflict + a.error + a.inFlight && a.unmatched === 0;
}

export function describeAccount(a: OpAccount): string {
  const codes = Object.entries(a.errorCodes)
    .map(([k, v]) => `${k}×${v}`)
    .join(', ');
  return (
    `sent ${fmt(a.sent)} = applied ${fmt(a.applied)} + conflict ${fmt(a.conflict)} + error ${fmt(a.error)}` +
    ` + in flight ${fmt(a.inFlight)} ${balanced(a) ? '✓' : `✗ (unmatched ${a.unmatched})`}${codes ? ` [errors: ${codes}]` : ''}`
  );
}
