/** zod results as catalog errors: `validation_failed` with the path of the first issue. */
import type { z } from 'zod';
import { AppError } from '../errors.ts';

export function describeIssue(issue: z.core.$ZodIssue): { path: (string | number)[]; message: string } {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  // An unknown field: the path names the field itself, not the object holding it.
  if (issue.code === 'unrecognized_keys' && issue.keys.length) {
    path.push(issue.keys[0]);
    return { path, message: `${path.join('.')}: is not a known field` };
  }
  const where = path.length ? path.join('.') : 'the value';
  return { path, message: `${where}: ${issue.message}` };
}

export function parseWith<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const { path, message } = describeIssue(result.error.issues[0]);
  throw new AppError('validation_failed', message, { path });
}
