/**
 * A small schema language for miniapp state. Unlike a general validator it can be walked
 * along an op's path, so an edit is checked where it lands (the new value, its container and
 * the objects above it) instead of re-validating a whole trip on every keystroke.
 */
import { isWellFormedText, TEXT_RULE } from './text.ts';

export type Schema = StringSchema | NumberSchema | ObjectSchema | ArraySchema;

interface Base {
  /** `null` is accepted in place of a value. */
  nullable?: boolean;
}

export interface StringSchema extends Base {
  kind: 'string';
  min?: number;
  max: number;
  /** Extra check with a name for messages, e.g. "an ISO date (YYYY-MM-DD)". */
  format?: { test: (value: string) => boolean; name: string };
}

export interface NumberSchema extends Base {
  kind: 'number';
  min?: number;
  max?: number;
}

export interface ObjectSchema extends Base {
  kind: 'object';
  fields: Record<string, { schema: Schema; optional?: boolean }>;
  /** Cross-field rule; returns a message when the object breaks it. */
  refine?: (value: Record<string, unknown>) => string | null;
}

export interface ArraySchema extends Base {
  kind: 'array';
  items: Schema;
  max: number;
  /** Items are objects with a string `id`, unique within the array, addressable as `{id}`. */
  keyed?: boolean;
}

export const ID_MAX = 64;

export interface Issue {
  path: (string | number)[];
  message: string;
}

const hasOwn = Object.prototype.hasOwnProperty;

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validates `value` against `schema` deeply. Returns the first issue, or null when valid. */
export function validate(schema: Schema, value: unknown, path: (string | number)[] = []): Issue | null {
  if (value === null) {
    return schema.nullable ? null : { path, message: 'must not be null' };
  }
  switch (schema.kind) {
    case 'string': {
      if (typeof value !== 'string') return { path, message: 'must be a string' };
      if (!isWellFormedText(value)) return { path, message: TEXT_RULE };
      // Characters are code points (an emoji is one), counted only when UTF-16 length is not enough.
      const min = schema.min ?? 0;
      const chars = value.length > schema.max || (min > 1 && value.length < 2 * min) ? [...value].length : value.length;
      if (chars < min) return { path, message: `must be at least ${schema.min} characters` };
      if (chars > schema.max) return { path, message: `must be at most ${schema.max} characters` };
      if (schema.format && !schema.format.test(value)) return { path, message: `must be ${schema.format.name}` };
      return null;
    }
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value)) return { path, message: 'must be a finite number' };
      if (schema.min !== undefined && value < schema.min) return { path, message: `must be ≥ ${schema.min}` };
      if (schema.max !== undefined && value > schema.max) return { path, message: `must be ≤ ${schema.max}` };
      return null;
    }
    case 'object': {
      if (!isPlainObject(value)) return { path, message: 'must be an object' };
      for (const key of Object.keys(value)) {
        if (!hasOwn.call(schema.fields, key)) return { path: [...path, key], message: 'is not a known field' };
      }
      for (const [key, field] of Object.entries(schema.fields)) {
        if (!hasOwn.call(value, key) || value[key] === undefined) {
          if (field.optional) continue;
          return { path: [...path, key], message: 'is required' };
        }
        const issue = validate(field.schema, value[key], [...path, key]);
        if (issue) return issue;
      }
      const refined = schema.refine?.(value);
      return refined ? { path, message: refined } : null;
    }
    case 'array': {
      if (!Array.isArray(value)) return { path, message: 'must be an array' };
      if (value.length > schema.max) return { path, message: `must have at most ${schema.max} items` };
      const seen = schema.keyed ? new Set<string>() : null;
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        const issue = validate(schema.items, item, [...path, i]);
        if (issue) return issue;
        if (seen) {
          const id = keyOf(item);
          if (id === null) return { path: [...path, i, 'id'], message: `must be a string of 1–${ID_MAX} characters` };
          if (seen.has(id)) return { path: [...path, i, 'id'], message: `duplicates id "${id}"` };
          seen.add(id);
        }
      }
      return null;
    }
  }
}

/** The `id` of a keyed array item, or null when it has none that is valid. */
export function keyOf(item: unknown): string | null {
  if (!isPlainObject(item)) return null;
  const id = item.id;
  return typeof id === 'string' && id.length > 0 && id.length <= ID_MAX ? id : null;
}

/** A string schema for ids of keyed items. */
export const idSchema: StringSchema = { kind: 'string', min: 1, max: ID_MAX };

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const HH_MM = /^([01]\d|2[0-3]):[0-5]\d$/;

/** True for a real calendar date written `YYYY-MM-DD`. */
export function isIsoDate(value: string): boolean {
  const m = ISO_DATE.exec(value);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(0);
  // setUTCFullYear, unlike Date.UTC, takes years 0–99 literally.
  date.setUTCFullYear(y, mo - 1, d);
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
}

export const isoDate: StringSchema['format'] = { test: isIsoDate, name: 'an ISO date (YYYY-MM-DD)' };
export const hhmm: StringSchema['format'] = { test: (v) => HH_MM.test(v), name: 'a time (HH:MM)' };
