import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  extractMemories,
  isForgetCommand,
  namesPersona,
  type ReplyDecisionInput,
  STAGES,
  shouldReply,
  stageOf,
} from '../../actors/conversationRules.ts';

const WHO = '+15551234567';
/** A lone (unpaired) UTF-16 surrogate: text that is no longer valid Unicode. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('isForgetCommand', () => {
  it.each([
    'forget that',
    'Forget that.',
    'please forget that',
    'Sage, forget that',
    'ok forget it',
    'never mind, forget it',
    "don't remember that",
    'delete that memory',
    'FORGET THAT!!',
    '  forget that  ',
    'hey sage, please forget that',
    'okay, scratch that',
    'erase what I just said',
    'forget the last thing I said',
    'nevermind forget it',
    'forget that please',
    'do not remember this',
  ])('recognises %j as a request to forget', (text) => {
    expect(isForgetCommand(text)).toBe(true);
  });

  it.each([
    // Asks Sage to keep something: the opposite of forgetting.
    "don't forget that I'm vegan",
    // Idiomatic "never mind / no problem", not a request to delete a memory; deleting on it
    // would lose data the person meant to keep, so it is deliberately not a forget command.
    "forget about it, it's fine?",
    'I forgot that',
    'forgetting things is human',
    'forget that restaurant, we should go to Luigi’s instead',
    'how do I forget that feeling?',
    'remember that',
    '',
  ])('does not treat %j as a request to forget', (text) => {
    expect(isForgetCommand(text)).toBe(false);
  });

  it('is false for a message without text', () => {
    expect(isForgetCommand(undefined)).toBe(false);
  });

  // "forget that (please|sage)" is accepted, so the same words with the comma people type
  // before a vocative or a "please" are a close variant too (docs/protocol.md "Conversation behaviour").
  it.each(['Forget that, Sage!', 'forget that, please', 'forget it, sage'])(
    'recognises %j (a trailing ", sage" or ", please") as a request to forget',
    (text) => {
      expect(isForgetCommand(text)).toBe(true);
    },
  );

  it('recognises the request whatever the case of its letters', () => {
    fc.assert(
      fc.property(
        fc.mixedCase(fc.constantFrom('forget that', 'please forget it', 'sage, delete that memory')),
        (text) => {
          expect(isForgetCommand(text)).toBe(true);
        },
      ),
    );
  });

  it('never treats a longer sentence that merely starts with "forget that" as a command', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('I', 'we', 'trip', 'movie', 'because', 'and'),
        fc.string({ maxLength: 30 }),
        (word, rest) => {
          expect(isForgetCommand(`forget that ${word} ${rest}`)).toBe(false);
        },
      ),
    );
  });
});

describe('namesPersona', () => {
  it.each([
    'Sage, hi',
    'thanks sage!',
    '@sage',
    'SAGE?',
    'hey Sage',
    'sage',
    '¿sage?',
    '«Sage»',
    'what do you think,sage',
    "sage's idea",
    '👋sage',
    'line one\nSage: line two',
  ])('finds the persona named in %j', (text) => {
    expect(namesPersona(text, 'sage')).toBe(true);
  });

  it.each(['sagebrush', 'massage', 'sausage', 'sage_bot', 'sage2', 'éSage', 'Sageé', 'ßsage', '日sage', ''])(
    'does not take %j as naming the persona',
    (text) => {
      expect(namesPersona(text, 'sage')).toBe(false);
    },
  );

  it('is false for a message without text', () => {
    expect(namesPersona(undefined, 'sage')).toBe(false);
  });

  it('finds the name in any case between any non-word characters', () => {
    const separator = fc.constantFrom('', ' ', ',', '!', '?', '@', '.', '\n', '—', '“', '”', '🙂', '(', ')', '-', "'");
    fc.assert(
      fc.property(fc.tuple(separator, fc.mixedCase(fc.constant('sage')), separator), ([before, name, after]) => {
        expect(namesPersona(`hi${before === '' ? ' ' : before}${name}${after}`, 'sage')).toBe(true);
      }),
    );
  });

  it('does not find the name inside a longer word', () => {
    const wordChar = fc.constantFrom('a', 'Z', 'é', 'ß', 'Ж', '日', '7', '_');
    fc.assert(
      fc.property(wordChar, fc.mixedCase(fc.constant('sage')), fc.boolean(), (c, name, before) => {
        expect(namesPersona(before ? `${c}${name}` : `${name}${c}`, 'sage')).toBe(false);
      }),
    );
  });

  it('works for other personas, including ones with regex characters in their name', () => {
    expect(namesPersona('hi Nova-2!', 'nova-2')).toBe(true);
    expect(namesPersona('hi nova-22', 'nova-2')).toBe(false);
    expect(namesPersona('a.b', 'a.b')).toBe(true);
    expect(namesPersona('axb', 'a.b')).toBe(false);
  });
});

describe('shouldReply', () => {
  const group = (over: Partial<ReplyDecisionInput>): ReplyDecisionInput => ({
    kind: 'group',
    persona: 'sage',
    text: 'see you all at 8',
    ourMessageIds: ['out_e1', 'out_e2'],
    ...over,
  });

  it('always replies in a direct chat, whatever the text', () => {
    fc.assert(
      fc.property(
        fc.option(fc.string(), { nil: undefined }),
        fc.option(fc.string(), { nil: undefined }),
        (text, replyTo) => {
          expect(shouldReply({ kind: 'direct', persona: 'sage', text, replyTo, ourMessageIds: [] })).toBe(true);
        },
      ),
    );
  });

  it('stays silent in a group when the persona is not named and the message answers nobody', () => {
    expect(shouldReply(group({}))).toBe(false);
  });

  it('replies in a group when the persona is named', () => {
    expect(shouldReply(group({ text: 'Sage, what do you think?' }))).toBe(true);
  });

  it("replies in a group to an answer to one of Sage's messages", () => {
    expect(shouldReply(group({ replyTo: 'out_e2' }))).toBe(true);
  });

  it('stays silent in a group for an answer to somebody else', () => {
    expect(shouldReply(group({ replyTo: 'evt_someone_else' }))).toBe(false);
  });

  it('stays silent in a group for a photo without text that answers nobody', () => {
    expect(shouldReply(group({ text: undefined }))).toBe(false);
  });

  it('does not mistake a word containing the name for the name', () => {
    expect(shouldReply(group({ text: 'who wants a massage?' }))).toBe(false);
  });
});

describe('extractMemories', () => {
  it.each([
    ['Remember that my flight is at 9.', `${WHO} asked me to remember: my flight is at 9`],
    ['My name is Ana.', `${WHO}'s name is Ana`],
    ["I can't stand cilantro!", `${WHO} cannot stand cilantro`],
    ["I don't like horror movies", `${WHO} does not like horror movies`],
    ['My sister is a doctor.', `${WHO}'s sister: a doctor`],
    ['My dog never barks at night.', `${WHO}'s dog never barks at night`],
    ['I live in Lisbon', `${WHO} lives in Lisbon`],
    ['I work at Acme Corp.', `${WHO} works at Acme Corp`],
    ["I'm allergic to peanuts", `${WHO} is allergic to peanuts`],
    ['I am vegan!', `${WHO} is vegan`],
    ["We're planning a trip to Rome.", `${WHO} said we are planning a trip to Rome`],
  ])('notes %j as %j', (text, note) => {
    expect(extractMemories(WHO, text)).toEqual([note]);
  });

  it('notes what someone loves, naming them and the thing', () => {
    const [note] = extractMemories(WHO, 'I really love jazz!');
    expect(note.startsWith(WHO)).toBe(true);
    expect(note).toMatch(/love/);
    expect(note.endsWith('jazz')).toBe(true);
  });

  it('keeps nothing from small talk', () => {
    expect(extractMemories(WHO, 'hi! how are you today?')).toEqual([]);
    expect(extractMemories(WHO, '')).toEqual([]);
    expect(extractMemories(WHO, undefined)).toEqual([]);
  });

  it('notes at most three things per message, the first three in order', () => {
    const text = "I live in Lisbon. I'm vegan. My sister is a doctor. I work at Acme. We're planning a trip to Rome.";
    expect(extractMemories(WHO, text)).toEqual([
      `${WHO} lives in Lisbon`,
      `${WHO} is vegan`,
      `${WHO}'s sister: a doctor`,
    ]);
  });

  it('takes one note per sentence, also across lines', () => {
    expect(extractMemories(WHO, 'I live in Lisbon\nI work at Acme')).toEqual([
      `${WHO} lives in Lisbon`,
      `${WHO} works at Acme`,
    ]);
  });

  it('reads an initial inside a sentence as part of it, and an initial ending a sentence as its end', () => {
    expect(extractMemories(WHO, 'My name is W. I love durian pancakes. My brother O. is in rehab.')).toEqual([
      `${WHO}'s name is W`,
      `${WHO} loves durian pancakes`,
      `${WHO}'s brother O: in rehab`,
    ]);
  });

  it('notes nothing from a forget command', () => {
    for (const text of ['forget that', "don't remember that", 'Sage, delete that memory', 'never mind, forget it']) {
      expect(extractMemories(WHO, text)).toEqual([]);
    }
  });

  it('stops a name at the end of the name ("My name is Ana and I love cats" is not Ana\'s name)', () => {
    expect(extractMemories(WHO, 'My name is Ana and I love cats')[0]).toBe(`${WHO}'s name is Ana`);
  });

  it('never cuts a character in half (notes stay valid Unicode)', () => {
    const [note] = extractMemories(WHO, `remember ${'a'.repeat(199)}😀 please`);
    expect(note).not.toMatch(LONE_SURROGATE);
  });

  it('for any text: at most three notes, each mentioning the sender and at most 300 characters', () => {
    const sentence = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.constantFrom(
        'I love tea',
        'My cat is grumpy',
        'I live in Oslo',
        "I'm vegan",
        'remember my keys',
        "We're going to Paris",
      ),
    );
    fc.assert(
      fc.property(fc.array(sentence, { maxLength: 8 }), fc.constantFrom('.', '!', '?', '\n'), (sentences, stop) => {
        const notes = extractMemories(WHO, sentences.join(`${stop} `));
        expect(notes.length).toBeLessThanOrEqual(3);
        for (const note of notes) {
          expect(note.startsWith(WHO)).toBe(true);
          expect(note.length).toBeLessThanOrEqual(300);
        }
      }),
    );
  });

  it('writes every note about the given sender', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^\+[1-9]\d{6,14}$/), (who) => {
        expect(extractMemories(who, "I'm vegan. I live in Oslo.")).toEqual([`${who} is vegan`, `${who} lives in Oslo`]);
      }),
    );
  });
});

describe('stageOf', () => {
  const at = (messages: number) => stageOf({ messages, replies: 0, photos: 0 });

  it('starts every relationship as new', () => {
    expect(at(0)).toBe('new');
    expect(at(9)).toBe('new');
  });

  it.each(STAGES.map(([n, name]) => [n, name] as const))('reaches the stage at exactly %i messages (%s)', (n, name) => {
    expect(at(n)).toBe(name);
    expect(at(n - 1)).not.toBe(name);
  });

  it('lists the stages highest first', () => {
    const thresholds = STAGES.map(([n]) => n);
    expect(thresholds).toEqual([...thresholds].sort((a, b) => b - a));
    expect(STAGES.map(([, name]) => name)).toEqual(['close', 'friend', 'acquainted']);
  });

  it('never goes back a stage as messages add up', () => {
    const order = ['new', 'acquainted', 'friend', 'close'];
    fc.assert(
      fc.property(fc.nat(10_000), fc.nat(10_000), (a, b) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        expect(order.indexOf(at(lo))).toBeLessThanOrEqual(order.indexOf(at(hi)));
      }),
    );
  });

  it('counts only messages, not replies or photos', () => {
    expect(stageOf({ messages: 0, replies: 1_000, photos: 1_000 })).toBe('new');
  });
});
