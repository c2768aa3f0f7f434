import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ReplyRequest } from '../../src/brain/Brain.ts';
import { classifyLocally } from '../../src/brain/localModeration.ts';
import { createOfflineBrain } from '../../src/brain/offlineBrain.ts';
import { buildPrompt, personaPrompt } from '../../src/brain/prompt.ts';
import { searchTerms } from '../../src/memory/MemoryStore.ts';

const ALICE = '+15551234567';
const BOB = '+15557654321';
/** A lone (unpaired) UTF-16 surrogate: text that is no longer valid Unicode. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const request = (over: Partial<ReplyRequest> = {}): ReplyRequest => ({
  persona: 'sage',
  kind: 'direct',
  sender: ALICE,
  text: 'any ideas for dinner tonight?',
  history: [],
  memories: [],
  photos: [],
  stage: 'new',
  ...over,
});

describe('buildPrompt', () => {
  it('puts the persona, the stage, the memories and the photos in one system message first', () => {
    const messages = buildPrompt(
      request({
        memories: [`${ALICE} is vegan`, `${ALICE} lives in Oslo`],
        photos: ['a bowl of ramen'],
        stage: 'friend',
      }),
    );
    const system = messages.filter((m) => m.role === 'system');
    expect(system).toHaveLength(1);
    expect(messages[0]).toBe(system[0]);
    const content = system[0].content;
    expect(content).toContain(personaPrompt('sage'));
    expect(content).toContain('You are Sage');
    expect(content).toContain('friend');
    expect(content).toContain(`- ${ALICE} is vegan`);
    expect(content).toContain(`- ${ALICE} lives in Oslo`);
    expect(content).toContain('- a bowl of ramen');
    expect(content).toContain('one-to-one');
  });

  it('leaves the memory and photo sections out when there are none', () => {
    const [system] = buildPrompt(request());
    expect(system.content).not.toContain('What you remember');
    expect(system.content).not.toContain('Photos shared here');
  });

  it('describes an unknown persona by its name', () => {
    const [system] = buildPrompt(request({ persona: 'nova' }));
    expect(system.content).toContain('You are nova');
  });

  it('replays the history in order and answers the message last', () => {
    const messages = buildPrompt(
      request({
        history: [
          { role: 'user', sender: ALICE, text: 'hi' },
          { role: 'assistant', text: 'hello!' },
        ],
        text: 'what should I cook?',
      }),
    );
    expect(messages.slice(1)).toEqual([
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'hello!' },
      { role: 'user', content: 'what should I cook?' },
    ]);
  });

  it('prefixes every user turn of a group chat with its sender, but not the assistant turns', () => {
    const messages = buildPrompt(
      request({
        kind: 'group',
        sender: BOB,
        text: 'Sage, which one?',
        history: [
          { role: 'user', sender: ALICE, text: 'pizza or sushi?' },
          { role: 'assistant', text: 'sushi!' },
        ],
      }),
    );
    expect(messages[0].content).toContain('group chat');
    expect(messages.slice(1)).toEqual([
      { role: 'user', content: `${ALICE}: pizza or sushi?` },
      { role: 'assistant', content: 'sushi!' },
      { role: 'user', content: `${BOB}: Sage, which one?` },
    ]);
  });

  it('always ends with the message being answered, as a user turn', () => {
    const turn = fc.record({
      role: fc.constantFrom('user' as const, 'assistant' as const),
      sender: fc.constantFrom(ALICE, BOB),
      text: fc.string(),
    });
    fc.assert(
      fc.property(
        fc.constantFrom('direct' as const, 'group' as const),
        fc.array(turn, { maxLength: 6 }),
        fc.string(),
        (kind, history, text) => {
          const messages = buildPrompt(request({ kind, history, text }));
          expect(messages).toHaveLength(history.length + 2);
          expect(messages.at(-1)).toEqual({ role: 'user', content: kind === 'group' ? `${ALICE}: ${text}` : text });
        },
      ),
    );
  });
});

describe('the offline brain', () => {
  const brain = createOfflineBrain();

  it('is in offline mode', () => {
    expect(brain.mode).toBe('offline');
  });

  it('says plainly that it is offline and quotes the message', async () => {
    const reply = await brain.reply(request({ text: '  what   do you think?  ' }));
    expect(reply).toMatch(/offline/i);
    expect(reply).toContain('Sage');
    expect(reply).toContain('"what do you think?"');
  });

  it('gives the same reply to the same request', async () => {
    const r = request({ memories: [`${ALICE} is vegan`], photos: ['a cat on a sofa'] });
    expect(await brain.reply(r)).toBe(await brain.reply(structuredClone(r)));
  });

  it('mentions the most relevant memory and the latest photo', async () => {
    const reply = await brain.reply(
      request({
        text: 'Any hiking trails near Oslo?',
        memories: [`${ALICE} hates mornings`, `${ALICE} loves hiking`, `${ALICE} lives in Oslo`],
        photos: ['an old photo', 'a mountain lake at dusk'],
      }),
    );
    expect(reply).toContain('About the photo: a mountain lake at dusk.');
    expect(reply).not.toContain('an old photo');
    expect(reply).toContain(`I remember: ${ALICE} loves hiking; ${ALICE} lives in Oslo.`);
    expect(reply).not.toContain('hates mornings');
  });

  it('answers a photo without text', async () => {
    const reply = await brain.reply(request({ text: '', photos: ['a sunset'] }));
    expect(reply).toContain('You sent me something.');
    expect(reply).toContain('a sunset');
  });

  it('shortens a long message it quotes', async () => {
    const reply = await brain.reply(request({ text: 'word '.repeat(100) }));
    const quoted = /You said: "(.*)"\./.exec(reply)?.[1] ?? '';
    expect(quoted.length).toBeLessThanOrEqual(140);
    expect(quoted.endsWith('…')).toBe(true);
  });

  it('never cuts a character in half when it shortens a message (the reply stays valid Unicode)', async () => {
    const reply = await brain.reply(request({ text: `${'a'.repeat(136)}${'😀'.repeat(10)}` }));
    expect(reply).not.toMatch(LONE_SURROGATE);
  });

  it('describes a photo by kind and size without seeing it', async () => {
    const description = await brain.describePhoto({ mime: 'image/png', data: Buffer.alloc(3 * 1024) });
    expect(description).toContain('PNG');
    expect(description).toContain('3 KB');
    expect(description).toMatch(/offline/);
  });

  it('moderates with the local classifier', async () => {
    expect(await brain.moderate('I want to kill myself')).toEqual(classifyLocally('I want to kill myself'));
  });
});

describe('classifyLocally', () => {
  it.each([
    'I want to kill myself',
    "I've been thinking about suicide",
    'I feel suicidal',
    "I don't want to wake up tomorrow",
    'sometimes I want to die',
    'everyone would be better off dead without me',
    'I keep cutting myself',
    'I want to end my life',
    'there is no reason to live',
  ])('flags %j as self-harm', (text) => {
    expect(classifyLocally(text)).toMatchObject({
      flagged: true,
      selfHarm: true,
      categories: expect.arrayContaining(['self-harm']),
    });
  });

  it.each([
    ["I'm going to kill him", 'violence'],
    ['how do I make a bomb', 'violence'],
    ['I know where you live', 'harassment/threatening'],
    ["you're dead", 'harassment/threatening'],
  ])('flags %j as %s, not as self-harm', (text, category) => {
    expect(classifyLocally(text)).toEqual({ flagged: true, selfHarm: false, categories: [category] });
  });

  it.each([
    'what do you think of this photo?',
    'I killed it at the gym today',
    "I'm dying to see that movie",
    'my phone died again',
    'we should cut the cake at 8',
    'can you help me plan a trip to Rome?',
    'that joke was a bomb, nobody laughed',
  ])('does not flag the ordinary sentence %j', (text) => {
    expect(classifyLocally(text)).toEqual({ flagged: false, selfHarm: false, categories: [] });
  });

  it('never flags short sentences made of everyday words', () => {
    const words = [
      'I',
      'you',
      'we',
      'they',
      'Sage',
      'love',
      'like',
      'the',
      'a',
      'this',
      'that',
      'coffee',
      'weekend',
      'trip',
      'dinner',
      'movie',
      'today',
      'tomorrow',
      'going',
      'to',
      'want',
      'will',
      'make',
      'how',
      'do',
      'what',
      'think',
      'about',
      'photo',
      'park',
      'music',
      'book',
      'rain',
      'sunny',
      'cat',
      'dog',
      'pizza',
      'is',
      'are',
      'so',
      'good',
      'fun',
      'with',
      'my',
      'mom',
      'friends',
      'tired',
      'happy',
      'and',
      'maybe',
      'later',
      'plan',
      '!',
      '?',
      ',',
    ];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...words), { minLength: 1, maxLength: 12 }), (sentence) => {
        expect(classifyLocally(sentence.join(' ')).flagged).toBe(false);
      }),
    );
  });

  it('reports selfHarm exactly when the self-harm category is present', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('', 'I want to die', 'I will kill you', 'hello'),
        fc.string({ maxLength: 20 }),
        (a, b) => {
          const r = classifyLocally(`${a} ${b}`);
          expect(r.selfHarm).toBe(r.categories.includes('self-harm'));
          expect(r.flagged).toBe(r.categories.length > 0);
        },
      ),
    );
  });
});

describe('searchTerms', () => {
  it('lower-cases the words of the text and joins them as an OR query', () => {
    expect(searchTerms('Hello World')).toBe('hello | world');
  });

  it('keeps only words of at least three letters or digits', () => {
    expect(searchTerms('I am at the NYC office, room 101!')).toBe('the | nyc | office | room | 101');
  });

  it('keeps letters of any script', () => {
    expect(searchTerms('Café in Zürich, 東京 trip')).toBe('café | zürich | trip');
    expect(searchTerms('Встреча в Москве')).toBe('встреча | москве');
  });

  it('drops the characters to_tsquery would read as operators', () => {
    expect(searchTerms("don't & (cats|dogs) !wine: 'quoted' <-> star* back\\slash")).toBe(
      'don | cats | dogs | wine | quoted | star | back | slash',
    );
  });

  it('lists each word once', () => {
    expect(searchTerms('cat CAT Cat cats')).toBe('cat | cats');
  });

  it('uses at most 16 words', () => {
    const text = Array.from({ length: 30 }, (_, i) => `word${i}`).join(' ');
    expect(searchTerms(text)?.split(' | ')).toHaveLength(16);
  });

  it('is null when no word is long enough', () => {
    expect(searchTerms('')).toBeNull();
    expect(searchTerms('a b c to be or no')).toBeNull();
    expect(searchTerms('!!! ??? ... 🙂🙂🙂')).toBeNull();
  });

  it('only ever produces letter-or-digit words joined by " | " (nothing for to_tsquery to choke on)', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 200, unit: 'grapheme' }),
      fc.string({ maxLength: 200 }),
      fc
        .array(
          fc.constantFrom(
            'abc',
            'ÉCOLE',
            '123',
            '&',
            '|',
            '!',
            '(',
            ')',
            ':*',
            "'",
            '\\',
            '<->',
            ' ',
            '\u0000',
            '\uD800',
            'İstanbul',
            '\u0301',
          ),
          {
            maxLength: 40,
          },
        )
        .map((parts) => parts.join('')),
    );
    fc.assert(
      fc.property(text, (t) => {
        const terms = searchTerms(t);
        if (terms === null) {
          expect(t.toLowerCase().match(/[\p{L}\p{N}]{3,}/u)).toBeNull();
          return;
        }
        expect(terms).toMatch(/^[\p{L}\p{N}]{3,}( \| [\p{L}\p{N}]{3,})*$/u);
        const words = terms.split(' | ');
        expect(words.length).toBeLessThanOrEqual(16);
        expect(new Set(words).size).toBe(words.length);
        for (const w of words) expect(w).toBe(w.toLowerCase());
      }),
    );
  });
});
