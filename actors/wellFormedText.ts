/**
 * The one zod refinement for client text (see `text.ts`): every zod schema of what a client
 * sends (frames, HTTP bodies, relay events) builds its strings with `text()` or checks
 * `wellFormedText`, so a string PostgreSQL cannot store is refused where it arrives, with
 * its path. Kept apart from `text.ts` so the client SDK's bundle does not pull in zod.
 */
import { z } from 'zod';
import { isWellFormedText, TEXT_RULE } from './text.ts';

export const wellFormedText = z.refine<string>(isWellFormedText, { message: TEXT_RULE });

/** `z.string()` that refuses U+0000 and lone surrogates; chain `.min()`, `.max()`, `.regex()` as usual. */
export function text(): z.ZodString {
  return z.string().check(wellFormedText);
}
