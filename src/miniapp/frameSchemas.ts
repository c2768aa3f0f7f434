/**
 * zod schemas of the frames clients send on `/v1/miniapp/:sessionId`. The frame's own
 * strings are checked here; the strings inside an op (path segments, values, keys) are the
 * op's content and are checked where it is applied (`actors/ops.ts`), so a malformed one is
 * answered `invalid_op` like any other value the app refuses.
 */
import { z } from 'zod';
import { text } from '../../actors/wellFormedText.ts';

const segment = z.union([
  z.string().min(1).max(64),
  z.number().int().min(0).max(1_000_000),
  z.object({ id: z.string().min(1).max(64) }).strict(),
]);
const path = z.array(segment).max(32);
const value = z.unknown().refine((v) => v !== undefined, { message: 'is required' });

export const opSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('set'), path: path.min(1), value }).strict(),
  z.object({ kind: z.literal('insert'), path, index: z.number().int().min(0).optional(), value }).strict(),
  z.object({ kind: z.literal('remove'), path: path.min(1) }).strict(),
]);

export const opFrameSchema = z.object({
  type: z.literal('op'),
  opId: text().min(1).max(200),
  baseVersion: z.number().int().min(0),
  op: opSchema,
});

export const resumeFrameSchema = z.object({
  type: z.literal('resume'),
  since: z.number().int().min(0),
});
