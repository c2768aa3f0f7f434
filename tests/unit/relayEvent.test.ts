import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { AppError, Codes } from '../../src/errors.ts';
import { containerTagOf, isContainerTag } from '../../src/memory/containerTag.ts';
import {
  conversationKeyOf,
  limitsFrom,
  MAX_ATTACHMENTS,
  parseRelayEvent,
  type RelayEventLimits,
  relayEventSchema,
} from '../../src/relay/relayEvent.ts';

const MEDIA_HOST = 'media.example.com';
const limits: RelayEventLimits = { maxTextChars: 50, maxAttachmentBytes: 30, mediaHosts: [MEDIA_HOST] };
const schema = relayEventSchema(limits);

const direct = {
  id: 'evt_01H',
  type: 'message',
  chat: { guid: 'iMessage;-;+15551234567', group: false },
  sender: '+15551234567',
  text: 'what do you think?',
  sentAt: '2026-11-24T18:03:11.000Z',
};
const group = {
  id: 'evt_02H',
  type: 'message',
  chat: { guid: 'iMessage;+;chat4242', group: true, participants: ['+15551234567', '+15557654321'] },
  sender: '+15557654321',
  persona: 'sage',
  text: 'Sage, thoughts?',
  attachments: [{ id: 'att_1', mime: 'image/jpeg', data: Buffer.from('jpeg bytes').toString('base64') }],
  replyTo: 'out_evt_01H',
  sentAt: '2026-11-24T18:03:11+01:00',
};
const photo = (over: Record<string, unknown> = {}) => ({ id: 'att_1', mime: 'image/jpeg', data: 'AAAA', ...over });

/** The error `parseRelayEvent` throws for `value` (fails the test when it accepts it). */
function rejection(value: unknown, s = schema): AppError {
  try {
    parseRelayEvent(s, value);
  } catch (err) {
    return err as AppError;
  }
  throw new Error(`accepted ${JSON.stringify(value)}`);
}

function expectRejected(value: unknown, path: (string | number)[], s = schema) {
  const err = rejection(value, s);
  expect(err).toBeInstanceOf(AppError);
  expect({ code: err.code, path: err.path }).toEqual({ code: Codes.validation_failed, path });
  expect(err.status).toBe(400);
}

describe('parseRelayEvent: valid events', () => {
  it('accepts a direct message and fills in the defaults (persona sage, no attachments)', () => {
    const e = parseRelayEvent(schema, direct);
    expect(e).toEqual({ ...direct, persona: 'sage', attachments: [] });
  });

  it('accepts a group message with participants, a photo and a replyTo', () => {
    expect(parseRelayEvent(schema, group)).toEqual(group);
  });

  it('accepts a photo without text', () => {
    const { text: _, ...noText } = direct;
    expect(parseRelayEvent(schema, { ...noText, attachments: [photo()] }).attachments).toHaveLength(1);
  });

  it('accepts an https attachment URL on a media host', () => {
    const e = parseRelayEvent(schema, {
      ...direct,
      attachments: [photo({ data: undefined, url: `https://${MEDIA_HOST}/a/b.jpg` })],
    });
    expect(e.attachments[0].url).toBe(`https://${MEDIA_HOST}/a/b.jpg`);
  });

  it('accepts limits exactly at their edge', () => {
    expect(() => parseRelayEvent(schema, { ...direct, id: 'x'.repeat(200) })).not.toThrow();
    expect(() => parseRelayEvent(schema, { ...direct, text: 'x'.repeat(limits.maxTextChars) })).not.toThrow();
    const thirtyBytes = Buffer.alloc(limits.maxAttachmentBytes, 7).toString('base64');
    expect(() => parseRelayEvent(schema, { ...direct, attachments: [photo({ data: thirtyBytes })] })).not.toThrow();
    const ten = Array.from({ length: MAX_ATTACHMENTS }, (_, i) => photo({ id: `att_${i}` }));
    expect(() => parseRelayEvent(schema, { ...direct, attachments: ten })).not.toThrow();
  });

  it('accepts timestamps with Z or an offset, with or without seconds and fractions', () => {
    for (const sentAt of ['2026-11-24T18:03Z', '2026-11-24T18:03:11Z', '2026-11-24T18:03:11.123456789-05:00']) {
      expect(parseRelayEvent(schema, { ...direct, sentAt }).sentAt).toBe(sentAt);
    }
  });
});

describe('parseRelayEvent: rejections', () => {
  it.each([
    ['a sender that is not E.164', { ...direct, sender: '5551234567' }, ['sender']],
    ['a sender with spaces', { ...direct, sender: '+1 555 123 4567' }, ['sender']],
    ['a sender with a leading zero', { ...direct, sender: '+05551234567' }, ['sender']],
    [
      'a participant that is not E.164',
      { ...group, chat: { ...group.chat, participants: ['+15551234567', 'bob'] } },
      ['chat', 'participants', 1],
    ],
    ['an id over 200 characters', { ...direct, id: 'x'.repeat(201) }, ['id']],
    ['an empty id', { ...direct, id: '' }, ['id']],
    ['a chat guid over 200 characters', { ...direct, chat: { guid: 'g'.repeat(201), group: false } }, ['chat', 'guid']],
    ['a replyTo over 200 characters', { ...direct, replyTo: 'r'.repeat(201) }, ['replyTo']],
    ['text over maxTextChars', { ...direct, text: 'x'.repeat(limits.maxTextChars + 1) }, ['text']],
    ['no text and no attachments', { ...direct, text: undefined }, ['text']],
    ['blank text and no attachments', { ...direct, text: ' \n\t ' }, ['text']],
    [
      'an attachment with both data and url',
      { ...direct, attachments: [photo({ url: `https://${MEDIA_HOST}/x.jpg` })] },
      ['attachments', 0],
    ],
    [
      'an attachment with neither data nor url',
      { ...direct, attachments: [photo({ data: undefined })] },
      ['attachments', 0],
    ],
    [
      'an attachment URL on another host',
      { ...direct, attachments: [photo({ data: undefined, url: 'https://evil.example.net/x.jpg' })] },
      ['attachments', 0, 'url'],
    ],
    [
      'an attachment URL on a subdomain of a media host',
      { ...direct, attachments: [photo({ data: undefined, url: `https://x.${MEDIA_HOST}/x.jpg` })] },
      ['attachments', 0, 'url'],
    ],
    [
      'an http attachment URL',
      { ...direct, attachments: [photo({ data: undefined, url: `http://${MEDIA_HOST}/x.jpg` })] },
      ['attachments', 0, 'url'],
    ],
    [
      'attachment data that is not base64',
      { ...direct, attachments: [photo({ data: 'not base64!' })] },
      ['attachments', 0, 'data'],
    ],
    [
      'attachment data over maxAttachmentBytes',
      { ...direct, attachments: [photo({ data: Buffer.alloc(31).toString('base64') })] },
      ['attachments', 0, 'data'],
    ],
    ['a bad mime type', { ...direct, attachments: [photo({ mime: 'jpeg' })] }, ['attachments', 0, 'mime']],
    [
      'a mime type with spaces',
      { ...direct, attachments: [photo({ mime: 'image/ jpeg' })] },
      ['attachments', 0, 'mime'],
    ],
    [
      `more than ${MAX_ATTACHMENTS} attachments`,
      { ...direct, attachments: Array.from({ length: MAX_ATTACHMENTS + 1 }, (_, i) => photo({ id: `a${i}` })) },
      ['attachments'],
    ],
    ['a sentAt without a zone', { ...direct, sentAt: '2026-11-24T18:03:11.000' }, ['sentAt']],
    ['a sentAt that is only a date', { ...direct, sentAt: '2026-11-24' }, ['sentAt']],
    ['a missing sentAt', { ...direct, sentAt: undefined }, ['sentAt']],
    ['an upper-case persona', { ...direct, persona: 'Sage' }, ['persona']],
    ['chat.group that is not a boolean', { ...direct, chat: { guid: 'g', group: 'no' } }, ['chat', 'group']],
    ['an unknown field in the chat', { ...direct, chat: { ...direct.chat, color: 'blue' } }, ['chat', 'color']],
    [
      'an unknown field in an attachment',
      { ...direct, attachments: [photo({ width: 10 })] },
      ['attachments', 0, 'width'],
    ],
  ])('rejects %s', (_name, value, path) => {
    expectRejected(value, path);
  });

  it('rejects an unknown top-level field (strict), naming it in the message', () => {
    const err = rejection({ ...direct, colour: 'blue' });
    expect(err.code).toBe(Codes.validation_failed);
    expect(err.message).toContain('colour');
  });

  it('rejects an attachment URL that is not a URL at all as a validation error, not a crash', () => {
    expectRejected({ ...direct, attachments: [photo({ data: undefined, url: 'not a url' })] }, [
      'attachments',
      0,
      'url',
    ]);
  });

  it('rejects any attachment whose data decodes to more than maxAttachmentBytes, whatever the limit', () => {
    fc.assert(
      // Sizes around the limit, where base64 padding makes the length check approximate.
      fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: -3, max: 3 }), (max, delta) => {
        const size = Math.max(1, max + delta);
        const s = relayEventSchema({ ...limits, maxAttachmentBytes: max });
        const value = { ...direct, attachments: [photo({ data: Buffer.alloc(size, 1).toString('base64') })] };
        if (size <= max) expect(() => parseRelayEvent(s, value)).not.toThrow();
        else expectRejected(value, ['attachments', 0, 'data'], s);
      }),
    );
  });

  it.each([
    ['typing', { ...direct, type: 'typing' }],
    ['missing', { ...direct, type: undefined }],
    ['a number', { ...direct, type: 1 }],
  ])('answers unknown_event_type for a type that is %s', (_name, value) => {
    const err = rejection(value);
    expect({ code: err.code, path: err.path }).toEqual({ code: Codes.unknown_event_type, path: ['type'] });
  });

  it.each([null, [], 'evt', 42])('rejects %j, which is not an event object', (value) => {
    expectRejected(value, []);
  });

  it('rejects every way of breaking an event with a catalog code, never a crash', () => {
    // Each field offers only broken values; an event breaks one or more of them, so every
    // generated event must be refused, with a catalog code and a path into a broken field.
    const notBase64OrTooBig = fc.constantFrom('', 'AA', 'not base64!', 'AAA=AAAA', Buffer.alloc(31).toString('base64'));
    const badUrl = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom(`http://${MEDIA_HOST}/p.jpg`, 'https://evil.example.net/p.jpg', 'https://', 'ftp://x/y'),
    );
    const brokenAttachment = fc.oneof(
      fc.record({
        id: fc.constantFrom('', 'x'.repeat(201)),
        mime: fc.constant('image/jpeg'),
        data: fc.constant('AAAA'),
      }),
      fc.record({
        id: fc.constant('a'),
        mime: fc.constantFrom('', 'jpeg', 'image/', '/jpeg', 'a b/c'),
        data: fc.constant('AAAA'),
      }),
      fc.record({ id: fc.constant('a'), mime: fc.constant('image/jpeg'), data: notBase64OrTooBig }),
      fc.record({ id: fc.constant('a'), mime: fc.constant('image/jpeg'), url: badUrl }),
      // Both data and url, or neither; an unknown field.
      fc.constant({ id: 'a', mime: 'image/jpeg', data: 'AAAA', url: `https://${MEDIA_HOST}/p.jpg` }),
      fc.constant({ id: 'a', mime: 'image/jpeg' }),
      fc.constant({ id: 'a', mime: 'image/jpeg', data: 'AAAA', colour: 'red' }),
    );
    const brokenFields: Record<string, fc.Arbitrary<unknown>> = {
      id: fc.oneof(fc.constant(''), fc.string({ minLength: 201, maxLength: 210 }), fc.integer(), fc.constant(null)),
      type: fc.oneof(fc.constantFrom('typing', 'Message', ''), fc.integer()),
      chat: fc.constantFrom(
        null,
        {},
        { guid: '', group: false },
        { guid: 'g', group: 'yes' },
        { guid: 'g', group: true, participants: ['nobody'] },
      ),
      sender: fc.oneof(
        fc.constant(null),
        fc.string({ maxLength: 20 }).filter((v) => !/^\+[1-9]\d{6,14}$/.test(v)),
      ),
      persona: fc.constantFrom('', 'Sage', '1sage', 'sage bot'),
      text: fc.oneof(fc.string({ minLength: 51, maxLength: 60 }), fc.integer()),
      sentAt: fc.oneof(fc.constantFrom('', '2026-11-24', '2026-11-24T18:03:11', 'yesterday'), fc.integer()),
      attachments: fc.oneof(
        // A broken attachment after good ones.
        {
          arbitrary: fc
            .tuple(fc.array(fc.constant(photo()), { maxLength: 2 }), brokenAttachment)
            .map(([good, bad]) => [...good, bad]),
          weight: 4,
        },
        fc.constant(Array.from({ length: MAX_ATTACHMENTS + 1 }, (_, i) => photo({ id: `a${i}` }))),
        fc.constant('att_1'),
      ),
      replyTo: fc.constantFrom('', 42),
      colour: fc.constant('red'),
    };
    // Mostly one broken field (several can hide each other's leniency), sometimes several.
    const oneField = fc
      .constantFrom(...Object.keys(brokenFields))
      .chain((key) => brokenFields[key].map((value) => ({ [key]: value })));
    const severalFields = fc.record(brokenFields, { requiredKeys: [] }).filter((over) => Object.keys(over).length > 1);
    const breakage = fc.oneof({ arbitrary: oneField, weight: 3 }, { arbitrary: severalFields, weight: 1 });
    fc.assert(
      fc.property(breakage, (over) => {
        const err = rejection({ ...direct, ...over });
        expect(err).toBeInstanceOf(AppError);
        expect([Codes.validation_failed, Codes.unknown_event_type]).toContain(err.code);
        expect(err.status).toBe(400);
        expect(Object.keys(over)).toContain(err.path?.[0]);
      }),
      // The first failure is enough (the tests above pin each case); shrinking would only cost time.
      { endOnFailure: true, numRuns: 300 },
    );
  });
});

describe('relay event limits from the configuration', () => {
  it('uses the configured limits and media hosts (lower-cased, trimmed)', () => {
    const config = loadConfig({
      MAX_TEXT_CHARS: '5',
      MAX_ATTACHMENT_BYTES: '3',
      RELAY_MEDIA_HOSTS: ' Media.Example.com ,cdn.example.net',
    });
    const s = relayEventSchema(limitsFrom(config));
    expect(limitsFrom(config)).toEqual({
      maxTextChars: 5,
      maxAttachmentBytes: 3,
      mediaHosts: ['media.example.com', 'cdn.example.net'],
    });
    expect(() => parseRelayEvent(s, { ...direct, text: 'hello' })).not.toThrow();
    expectRejected({ ...direct, text: 'hello!' }, ['text'], s);
    expect(() =>
      parseRelayEvent(s, {
        ...direct,
        text: 'hi',
        attachments: [photo({ data: undefined, url: 'https://MEDIA.example.com/p.jpg' })],
      }),
    ).not.toThrow();
  });

  it('accepts no attachment URL at all by default', () => {
    const s = relayEventSchema(limitsFrom(loadConfig({})));
    expectRejected(
      { ...direct, attachments: [photo({ data: undefined, url: `https://${MEDIA_HOST}/p.jpg` })] },
      ['attachments', 0, 'url'],
      s,
    );
  });
});

describe('conversationKeyOf and containerTagOf', () => {
  it('maps a direct chat to user_{sender}_persona_{persona}', () => {
    expect(conversationKeyOf(parseRelayEvent(schema, direct))).toBe('user_+15551234567_persona_sage');
    expect(conversationKeyOf({ ...parseRelayEvent(schema, direct), persona: 'nova' })).toBe(
      'user_+15551234567_persona_nova',
    );
  });

  it('maps a group chat to group_{guid}, whoever sends', () => {
    const e = parseRelayEvent(schema, group);
    expect(conversationKeyOf(e)).toBe('group_iMessage;+;chat4242');
    expect(conversationKeyOf({ ...e, sender: '+15550000000', persona: 'nova' })).toBe('group_iMessage;+;chat4242');
  });

  it.each([
    'user_+15551234567_persona_sage',
    'user_+442071234567_persona_nova-2',
    'group_iMessage;+;chat4242',
    `group_${'g'.repeat(200)}`,
    'group_a\nb',
  ])('accepts the conversation key %j as a container tag', (key) => {
    expect(containerTagOf({ key })).toBe(key);
    expect(isContainerTag(key)).toBe(true);
  });

  it.each([
    '',
    'sage',
    'user_15551234567_persona_sage',
    'user_+15551234567',
    'user_+15551234567_persona_',
    'user_+15551234567_persona_Sage',
    'user_+1555_persona_sage',
    'user_+15551234567_persona_sage\n',
    'user_+15551234567_persona_sage_group_x ',
    'group_',
    `group_${'g'.repeat(201)}`,
    'GROUP_chat',
    ' group_chat',
  ])('refuses %j as a container tag', (key) => {
    expect(() => containerTagOf({ key })).toThrow(/not a conversation key/);
    expect(isContainerTag(key)).toBe(false);
  });

  it('makes a valid container tag of every valid event', () => {
    const event = fc.record({
      id: fc.constant('evt_1'),
      type: fc.constant('message'),
      chat: fc.record({
        guid: fc.oneof(
          fc.string({ minLength: 1, maxLength: 100, unit: 'grapheme' }),
          // A lone surrogate ('\uD800x') is no valid guid: docs/protocol.md "Tenancy and hostile input".
          fc.constantFrom('a\nb', '😀'.repeat(100)),
        ),
        group: fc.boolean(),
      }),
      sender: fc.stringMatching(/^\+[1-9]\d{6,14}$/),
      persona: fc.stringMatching(/^[a-z][a-z0-9_-]{0,63}$/),
      text: fc.constant('hi'),
      sentAt: fc.constant('2026-11-24T18:03:11Z'),
    });
    fc.assert(
      fc.property(event, (value) => {
        const key = conversationKeyOf(parseRelayEvent(schema, value));
        expect(containerTagOf({ key })).toBe(key);
      }),
    );
  });
});
