/**
 * What the page writes for people: ids, dates, amounts, who someone is, and which field an
 * edit touched ("the date of day 2"). Pure functions of their arguments.
 */
import type { TripPlannerState } from '../../actors/apps/tripPlanner.ts';
import type { ClientStatus, Op } from '../client/MiniappClient.ts';

export type Trip = TripPlannerState;

export function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function addDays(iso: string, n: number): string {
  const d = new Date(`${iso}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

export function weekday(iso: string | null | undefined): string {
  return iso ? new Date(`${iso}T00:00:00Z`).toLocaleDateString(undefined, { weekday: 'short', timeZone: 'UTC' }) : '';
}

export function money(amount: number, currency: string): string {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(amount);
  } catch {
    return `${amount.toFixed(2)} ${currency}`;
  }
}

/** Who holds the page's token. */
export interface Me {
  /** The token's `sub` (a phone number for people). */
  id: string;
  /** The token's optional `name` claim. */
  name?: string;
  /** Set for a share link's token: it opens this one trip and may not share it further. */
  sid?: string;
}

/**
 * The token's `sub` and `name`, to mark "you" and greet by name (display only: the server is
 * the one that verifies the token).
 */
export function claimsOf(jwt: string): Me | null {
  try {
    const b64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
    if (typeof claims.sub !== 'string') return null;
    const name = typeof claims.name === 'string' && claims.name.trim() ? claims.name.trim().slice(0, 80) : undefined;
    const sid = typeof claims.sid === 'string' ? claims.sid : undefined;
    return { id: claims.sub, name, sid };
  } catch {
    return null;
  }
}

/** A person as the page lists them: their display name when known, else their user id (phone number). */
export function personName(user: string, me: Me | null): string {
  return user === me?.id && me.name ? me.name : user;
}

/** Says in words which field an op edits, e.g. "the date of day 2". */
export function describeField(op: Op, trip: Trip): string {
  const [top, a, b, , field] = op.path;
  const n = trip.days.findIndex((d) => typeof a === 'object' && d.id === a.id);
  const day = n >= 0 ? `day ${n + 1}` : 'a day that was removed';
  if (top === 'title') return 'the trip title';
  if (top === 'dates') return a === 'start' ? 'the start date' : a === 'end' ? 'the end date' : 'the trip dates';
  if (top === 'members') return 'the members';
  if (top === 'budget') return a === 'currency' ? 'the currency' : `the ${String(op.path[3] ?? 'lines')} of the budget`;
  if (top !== 'days') return 'the trip';
  if (a === undefined) return 'the days';
  if (b === 'date') return `the date of ${day}`;
  if (b === 'items') return field ? `the ${String(field)} of a plan on ${day}` : `the plans of ${day}`;
  return day;
}

export function describeValue(op: Op): string {
  if (op.kind === 'remove') return 'remove it';
  const v = op.value as { title?: string; label?: string } | string | number | null;
  if (v === null || v === '') return '(empty)';
  if (typeof v === 'object') return v.title ?? v.label ?? 'a new entry';
  return String(v);
}

export const STATUS_TEXT: Record<ClientStatus, string> = {
  connecting: 'Connecting…',
  open: 'Live',
  reconnecting: 'Reconnecting…',
  closed: 'Offline',
};
