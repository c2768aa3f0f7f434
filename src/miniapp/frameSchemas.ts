/**
 * zod schemas of the frames clients send on `/v1/miniapp/:sessionId`. The frame's own
 * strings are checked here; the strings inside an op (path segments, values, keys) are the
 * op's content and are checked where it is applied (`actors/ops.ts`), so a malformed one is
 * answered `invalid_op` like any other value the app refuses.
 */
import { z } from 'zod';
import { isWellFormedText } from '../../actors/text.ts';
import { text } from '../../actors/wellFormedText.ts';

const MAX_SEGMENT = 64;
const MAX_INDEX = 1_000_000;
const MAX_PATH = 32;
const MAX_OP_ID = 200;

const segment = z.union([
  z.string().min(1).max(MAX_SEGMENT),
  z.number().int().min(0).max(MAX_INDEX),
  z.object({ id: z.string().min(1).max(MAX_SEGMENT) }).strict(),
]);
const path = z.array(segment).max(MAX_PATH);
const value = z.unknown().refine((v) => v !== undefined, { message: 'is required' });

export const opSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('set'), path: path.min(1), value }).strict(),
  z.object({ kind: z.literal('insert'), path, index: z.number().int().min(0).optional(), value }).strict(),
  z.object({ kind: z.literal('remove'), path: path.min(1) }).strict(),
]);

export const opFrameSchema = z.object({
  type: z.literal('op'),
  opId: text().min(1).max(MAX_OP_ID),
  baseVersion: z.number().int().min(0),
  op: opSchema,
});

export const resumeFrameSchema = z.object({
  type: z.literal('resume'),
  since: z.number().int().min(0),
});

export type OpFrame = z.infer<typeof opFrameSchema>;

/**
 * `opFrameSchema.safeParse`, with a fast path for the frames that are plainly valid: every op
 * frame of every client goes through here, and zod took ~1.3 µs of each (bench/README.md).
 * The fast path answers only for a frame it can tell is valid, building what zod would (the
 * same fields, in the schema's order); anything else — any doubt — goes to zod, which alone
 * words the errors. `tests/unit/frameSchemas.test.ts` holds the two to the same answer.
 */
export function parseOpFrame(frame: unknown): z.ZodSafeParseResult<OpFrame> {
  const data = plainOpFrame(frame);
  return data ? { success: true, data } : opFrameSchema.safeParse(frame);
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The frame as zod would parse it, when it is plainly valid; undefined otherwise. */
function plainOpFrame(frame: unknown): OpFrame | undefined {
  if (!isRecord(frame) || frame.type !== 'op') return undefined;
  const { opId, baseVersion, op } = frame;
  if (typeof opId !== 'string' || opId.length < 1 || opId.length > MAX_OP_ID || !isWellFormedText(opId))
    return undefined;
  if (!isCount(baseVersion) || !isRecord(op)) return undefined;
  const keys = keyCount(op);
  const value = op.value;
  if (op.kind === 'remove') {
    const path = keys === 2 ? plainPath(op.path, 1) : undefined;
    return path && { type: 'op', opId, baseVersion, op: { kind: 'remove', path } };
  }
  if (value === undefined) return undefined;
  if (op.kind === 'set') {
    const path = keys === 3 ? plainPath(op.path, 1) : undefined;
    return path && { type: 'op', opId, baseVersion, op: { kind: 'set', path, value } };
  }
  if (op.kind !== 'insert') return undefined;
  const path = plainPath(op.path, 0);
  if (path && keys === 3 && !('index' in op))
    return { type: 'op', opId, baseVersion, op: { kind: 'insert', path, value } };
  if (path && keys === 4 && isCount(op.index)) {
    return { type: 'op', opId, baseVersion, op: { kind: 'insert', path, index: op.index, value } };
  }
  return undefined;
}

function plainPath(path: unknown, min: number): OpFrame['op']['path'] | undefined {
  if (!Array.isArray(path) || path.length < min || path.length > MAX_PATH) return undefined;
  const out: OpFrame['op']['path'] = new Array(path.length);
  for (let i = 0; i < path.length; i++) {
    const s: unknown = path[i];
    if (typeof s === 'string') {
      if (s.length < 1 || s.length > MAX_SEGMENT) return undefined;
      out[i] = s;
    } else if (typeof s === 'number') {
      if (!isCount(s) || s > MAX_INDEX) return undefined;
      out[i] = s;
    } else if (
      isRecord(s) &&
      keyCount(s) === 1 &&
      typeof s.id === 'string' &&
      s.id.length >= 1 &&
      s.id.length <= MAX_SEGMENT
    ) {
      out[i] = { id: s.id };
    } else return undefined;
  }
  return out;
}

/** A plain object (what JSON.parse makes of `{…}`): not null, not an array, its prototype Object's. */
function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

function keyCount(o: object): number {
  let n = 0;
  for (const key in o) if (Object.hasOwn(o, key)) n++;
  return n;
}
