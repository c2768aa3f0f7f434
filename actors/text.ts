/**
 * Well-formed text: what PostgreSQL's `text` and `jsonb` can hold. Both refuse U+0000 and
 * lone surrogates, and they would do so late, inside a transaction shared with other
 * clients' writes; so every string a client sends is checked against this at the edge
 * (docs/protocol.md "Tenancy and hostile input") and refused alone. No imports: the client SDK
 * bundles it.
 */

/** The rule, worded for error messages (which never echo the value). */
export const TEXT_RULE = 'must be well-formed Unicode text without U+0000';

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

type MaybeWellFormed = string & { isWellFormed?: () => boolean };

/** True when `value` is well-formed Unicode (no lone surrogate) and holds no U+0000. */
export function isWellFormedText(value: string): boolean {
  if (value.includes('\0')) return false;
  const native = (value as MaybeWellFormed).isWellFormed;
  // Node 20 and current browsers have it; the pattern covers older browsers.
  return native ? native.call(value) : !LONE_SURROGATE.test(value);
}

/**
 * True when every string inside a JSON value, object keys included, is well-formed text.
 * Iterative, so a deeply nested value cannot overflow the stack.
 */
export function isWellFormedJson(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length) {
    const node = stack.pop();
    if (typeof node === 'string') {
      if (!isWellFormedText(node)) return false;
    } else if (Array.isArray(node)) {
      for (const item of node) stack.push(item);
    } else if (typeof node === 'object' && node !== null) {
      for (const key of Object.keys(node)) {
        if (!isWellFormedText(key)) return false;
        stack.push((node as Record<string, unknown>)[key]);
      }
    }
  }
  return true;
}

/** Model output made storable: U+0000 dropped, lone surrogates replaced by U+FFFD. */
export function toWellFormedText(value: string): string {
  const stripped = value.includes('\0') ? value.replaceAll('\0', '') : value;
  const native = (stripped as string & { toWellFormed?: () => string }).toWellFormed;
  return native ? native.call(stripped) : stripped.replace(new RegExp(LONE_SURROGATE, 'g'), '\ufffd');
}
