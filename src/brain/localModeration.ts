/**
 * The local content classifier used when no OpenAI key is set (and when the moderation API
 * fails): a small, documented set of patterns (README "Content safety"). It errs towards
 * flagging self-harm, and only flags other categories on explicit phrases.
 */
import type { ModerationResult } from './Brain.ts';

const CATEGORIES: [string, RegExp][] = [
  [
    'self-harm',
    /\b(kill(ing)? myself|suicid(e|al)|end (it all|my life)|want(ed)? to die|don'?t want to (live|be alive|wake up)|hurt(ing)? myself|self[- ]?harm|cut(ting)? myself|no reason to live|better off dead)\b/i,
  ],
  [
    'violence',
    /\b(i('| a)m going to|i will|gonna) (kill|shoot|stab|murder|hurt) (you|him|her|them|everyone)\b|\bhow (do i|to) (make|build) (a )?(bomb|explosive|weapon)\b/i,
  ],
  [
    'sexual/minors',
    /\b(sex(ual)?|nude|naked|porn)\b.{0,40}\b(child|children|kid|minor|underage|\d{1,2} ?y(ea)?r?s? ?old)\b|\b(child|kid|minor|underage)\b.{0,40}\b(sex(ual)?|nude|naked|porn)\b/i,
  ],
  ['harassment/threatening', /\b(i know where you live|you('| a)re (dead|going to die))\b/i],
];

export function classifyLocally(text: string): ModerationResult {
  const categories = CATEGORIES.filter(([, pattern]) => pattern.test(text)).map(([name]) => name);
  return { flagged: categories.length > 0, selfHarm: categories.includes('self-harm'), categories };
}
