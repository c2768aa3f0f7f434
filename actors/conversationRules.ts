/**
 * The pure rules of a conversation with Sage: when to answer in a group, "forget that",
 * what to remember from a message, the relationship stage, and the fixed safety replies.
 */

/** "forget that" and its close variants, as a whole message (politeness allowed). */
const FORGET =
  /^\s*(?:(?:ok(?:ay)?|hey|please|sage|actually|oh|um+)[,!.\s]+)*(?:please\s+)?(?:forget|scratch|delete|erase|drop)\s+(?:that|this|it|what i (?:just )?(?:said|told you)|the last thing(?: i said)?|that memory|my last message)(?:[,\s]+(?:please|sage|ok(?:ay)?))?\s*[.!]*\s*$|^\s*(?:please\s+)?(?:don'?t|do not)\s+remember\s+(?:that|this|it)\s*[.!]*\s*$|^\s*never\s*mind,?\s+forget\s+(?:it|that)\s*[.!]*\s*$/i;

export function isForgetCommand(text: string | undefined): boolean {
  return text !== undefined && FORGET.test(text);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** True when `text` names the persona as a word, any case ("Sage, …", "thanks sage!"). */
export function namesPersona(text: string | undefined, persona: string): boolean {
  if (!text) return false;
  return new RegExp(`(^|[^\\p{L}\\p{N}_])${escapeRegExp(persona)}($|[^\\p{L}\\p{N}_])`, 'iu').test(text);
}

export interface ReplyDecisionInput {
  kind: 'direct' | 'group';
  persona: string;
  text: string | undefined;
  /** The id of the message this one answers, if any. */
  replyTo?: string;
  /** Ids of Sage's recent messages in this conversation. */
  ourMessageIds: readonly string[];
}

/** Direct: always. Group: when the persona is named or the message answers one of Sage's. */
export function shouldReply(i: ReplyDecisionInput): boolean {
  if (i.kind === 'direct') return true;
  return namesPersona(i.text, i.persona) || (i.replyTo !== undefined && i.ourMessageIds.includes(i.replyTo));
}

const clean = (s: string) =>
  s
    .trim()
    .replace(/\s+/g, ' ')
    .replace(/[.!?,;:]+$/, '');

const THIRD_PERSON: Record<string, string> = {
  love: 'loves',
  like: 'likes',
  hate: 'hates',
  adore: 'adores',
  enjoy: 'enjoys',
  prefer: 'prefers',
  "can't stand": 'cannot stand',
  'cant stand': 'cannot stand',
  "don't like": 'does not like',
  'dont like': 'does not like',
};

/**
 * Memory-worthy statements of a message, as short third-person notes. The `u` flag makes
 * lengths count characters, so a note never ends in half an emoji.
 */
const PATTERNS: [RegExp, (m: RegExpMatchArray, who: string) => string][] = [
  [/^(?!.*\?\s*$).*?\bremember (?:that )?(.{3,200})/iu, (m, who) => `${who} asked me to remember: ${clean(m[1])}`],
  [
    /\bmy name is ((?:(?!and\b|but\b|i\b)[\p{L}'-]+)(?: (?!and\b|but\b|i\b)[\p{L}'-]+){0,2})/iu,
    (m, who) => `${who}'s name is ${clean(m[1])}`,
  ],
  [
    /\bi (?:really |absolutely |kind of |kinda )?(love|like|hate|adore|enjoy|prefer|can'?t stand|don'?t like) (.{2,120})/iu,
    (m, who) => `${who} ${THIRD_PERSON[m[1].toLowerCase()] ?? m[1].toLowerCase()} ${clean(m[2])}`,
  ],
  [/\bmy (\p{L}[\p{L}. ]{1,29}?) (?:is|are) (.{2,120})/iu, (m, who) => `${who}'s ${clean(m[1])}: ${clean(m[2])}`],
  [
    /\bmy ([\p{L} ]{2,40}?) (never|always|keeps|won'?t|doesn'?t|does|did|has|had|hates|loves) (.{3,140})/iu,
    (m, who) => `${who}'s ${clean(m[1])} ${m[2].toLowerCase()} ${clean(m[3])}`,
  ],
  [/\bi (live|work|study) (in|at|for) (.{2,80})/iu, (m, who) => `${who} ${m[1].toLowerCase()}s ${m[2]} ${clean(m[3])}`],
  [
    /\bi(?:'m| am) (allergic to .{2,80}|vegan|vegetarian|pregnant|moving .{2,80}|training for .{2,80})/iu,
    (m, who) => `${who} is ${clean(m[1])}`,
  ],
  [
    /\bwe(?:'re| are) (planning|going|thinking of|organi[sz]ing|throwing) (.{3,160})/iu,
    (m, who) => `${who} said we are ${m[1]} ${clean(m[2])}`,
  ],
];

/**
 * Where sentences end: after `.`, `!` or `?` and a space, except after an initial ("my brother
 * O. is in rehab") when a lower-case word follows; and at line breaks.
 */
const SENTENCE_END = /(?<=[.!?])(?<!(?:^|\s)\p{Lu}\.)\s+|(?<=(?:^|\s)\p{Lu}\.)\s+(?!\p{Ll})|\n+/u;

/** Notes worth remembering from `text`, written by `who` (at most three per message). */
export function extractMemories(who: string, text: string | undefined): string[] {
  if (!text || isForgetCommand(text)) return [];
  const found: string[] = [];
  for (const sentence of text.split(SENTENCE_END)) {
    for (const [pattern, note] of PATTERNS) {
      const m = sentence.match(pattern);
      if (m) {
        // At most 300 characters: counted by code point only when it may matter.
        const n = note(m, who);
        found.push(n.length <= 300 ? n : Array.from(n).slice(0, 300).join(''));
        break;
      }
    }
    if (found.length === 3) break;
  }
  return found;
}

export interface RelationshipCounters {
  messages: number;
  replies: number;
  photos: number;
}

/** Relationship stages by messages exchanged, highest first: new → acquainted → friend → close. */
export const STAGES: readonly (readonly [number, string])[] = [
  [200, 'close'],
  [50, 'friend'],
  [10, 'acquainted'],
];

export function stageOf(c: RelationshipCounters): string {
  return STAGES.find(([n]) => c.messages >= n)?.[1] ?? 'new';
}

export const SAFETY_REPLIES = {
  crisis:
    "I'm really sorry you're feeling this way, and I'm glad you told me. You deserve support right now: " +
    'in the US you can call or text 988 (Suicide & Crisis Lifeline) any time, or text HOME to 741741. ' +
    'Elsewhere, findahelpline.com lists free, confidential lines, and if you are in danger please call your local emergency number. ' +
    "I'm here to keep talking too.",
  refused: "I can't help with that one, but I'm happy to talk about something else.",
  replacedOutput: "Sorry, I'd rather not say that. Let's talk about something else.",
  fallback:
    "Sorry, I'm having trouble thinking right now. I got your message and I'll be able to answer properly soon.",
  forgotten: "Done, I've forgotten that.",
  nothingToForget: "There's nothing I remember here to forget.",
} as const;

/** What a reply of Sage's reads once the message it may have quoted was forgotten. */
export const FORGOTTEN_REPLY = '[forgotten]';

/** What a photo reads as when it could not be seen (its fetch or the vision call failed). */
export const PHOTO_UNSEEN = 'a photo I could not look at';
/**
 * What a photo reads as when it was not seen within PHOTO_WAIT_MS; it is still being looked
 * at, and its description replaces this once it comes (see `src/conversation/latePhotos.ts`).
 */
export const PHOTO_PENDING = 'a photo I am still looking at';
/** Whether a description says something of the photo (not a placeholder): only those are remembered. */
export const seenPhoto = (description: string): boolean =>
  description !== PHOTO_UNSEEN && description !== PHOTO_PENDING;
