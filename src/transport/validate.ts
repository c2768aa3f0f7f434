/**
 * zod results as catalog errors: `validation_failed` with the path of the first issue; and the
 * one way an error message may mention a client value (docs/protocol.md "Tenancy and hostile
 * input": never more than a short excerpt, and never by serializing it, which a value nested
 * 30,000 deep turns into a stack overflow).
 */
import type { z } from 'zod';
import { AppError } from '../errors.ts';

/** Longest excerpt of a client string quoted in an error message or path. */
export const EXCERPT_CHARS = 40;

/** A client string cut to at most `max` characters (ending in `…` when cut; never half a surrogate pair). */
export function truncate(text: string, max = EXCERPT_CHARS): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max - 1);
  return `${/[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut}…`;
}

/**
 * A client value as an error message may show it: a short quoted excerpt of a string, a
 * number or boolean as is, otherwise only its kind ("an array", "an object"). O(1): it never
 * walks into the value.
 */
export function excerpt(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(truncate(value));
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

export function describeIssue(issue: z.core.$ZodIssue): { path: (string | number)[]; message: string } {
  // Path segments can be client-chosen object keys: each is cut to an excerpt.
  const path = issue.path
    .filter((p): p is string | number => typeof p !== 'symbol')
    .map((p) => (typeof p === 'string' ? truncate(p) : p));
  // An unknown field: the path names the field itself, not the object holding it.
  if (issue.code === 'unrecognized_keys' && issue.keys.length) {
    path.push(truncate(issue.keys[0]));
    return { path, message: `${truncate(path.join('.'), 4 * EXCERPT_CHARS)}: is not a known field` };
  }
  const where = path.length ? truncate(path.join('.'), 4 * EXCERPT_CHARS) : 'the value';
  return { path, message: `${where}: ${truncate(issue.message, 4 * EXCERPT_CHARS)}` };
}

export function parseWith<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const { path, message } = describeIssue(result.error.issues[0]);
  throw new AppError('validation_failed', message, { path });
}
