/**
 * What the hostile user sends, as JSON text (or raw bytes): valid shapes with one poisoned
 * part, wrong types, unknown types, `__proto__`/`constructor` keys, strings PostgreSQL cannot
 * store (U+0000, lone surrogates), 1 MB strings, values nested 30,000 deep (built by string
 * concatenation: `JSON.stringify` of them overflows the stack), invalid UTF-8. Random values
 * come from fast-check with the run's seed.
 */
import fc from 'fast-check';
import type { Rng } from './rng.ts';

export const DEPTH = 30_000;
/** 30,000 nested arrays: 60 KB, so it fits in one 64 KiB frame. */
export const DEEP_ARRAY = `${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}`;
/** 30,000 nested objects: 150 KB, for bodies (a frame this size is `frame_too_large`). */
export const DEEP_OBJECT = `${'{"a":'.repeat(DEPTH)}1${'}'.repeat(DEPTH)}`;
export const ONE_MB = 'x'.repeat(1_000_000);
/** JSON texts of big strings, built once: the hostile user's own CPU is shared with the good users'. */
const ONE_MB_JSON = JSON.stringify(ONE_MB);
const ONE_MB_NUL_JSON = JSON.stringify(`${ONE_MB}\u0000`);
/** Bytes that are not UTF-8 (a lone continuation byte, an overlong form, 0xff). */
export const INVALID_UTF8 = Buffer.from([0x80, 0xc0, 0xaf, 0xff, 0xfe]);

const j = (v: unknown) => JSON.stringify(v);

/** Strings no client may store. */
const POISON_STRINGS = ['bad\u0000', '\u0000', '\ud800', 'a\udfffb', 'ok\ud83d', '\u0000\ud800'];

export interface Poison {
  /** A poisoned string as JSON text. */
  string(): string;
  /** Any poisoned or ill-typed JSON value as text (sometimes a plain random value). */
  value(): string;
  /** A miniapp socket frame as text, and what kind of poison it is. */
  miniappFrame(sessionVersion: number): { kind: string; text: string };
  /** A relay event as JSON text: mostly poisoned, sometimes valid (it is then stored and answered). */
  relayEvent(): { kind: string; text: string };
  /** A trip title or participant id that must be refused. */
  badUserText(): string;
}

export function createPoison(rng: Rng, seed: number): Poison {
  // A pool of arbitrary JSON values, reproducible from the seed.
  const randomValues = fc.sample(fc.jsonValue({ maxDepth: 4 }), { seed, numRuns: 500 }).map((v) => j(v));
  const randomStrings = fc.sample(fc.string({ unit: 'grapheme', maxLength: 300 }), { seed, numRuns: 200 });
  let n = 0;

  const string = () =>
    rng.weighted({
      poison: 8,
      big: 1,
    }) === 'big'
      ? ONE_MB_NUL_JSON
      : j(`${rng.pick(randomStrings)}${rng.pick(POISON_STRINGS)}`);

  const protoObject = () =>
    rng.pick([
      `{"__proto__":{"polluted":true}}`,
      `{"constructor":{"prototype":{"polluted":true}}}`,
      `{"id":"x","__proto__":${string()}}`,
      `[{"__proto__":null},{"constructor":"x"}]`,
    ]);

  const value = () =>
    rng.pick<() => string>([
      string,
      protoObject,
      () => rng.pick(randomValues),
      () => rng.pick(['null', 'true', '-1', '1e309', '1.5', '""', '[]', '{}', '"99999999999999999999"']),
      () => `[${string()},${rng.pick(randomValues)}]`,
      () => `{"id":${string()},"title":${string()},"items":[]}`,
    ])();

  const PATHS = [
    '["title"]',
    '["members"]',
    '["days"]',
    '["budget","currency"]',
    '["__proto__","polluted"]',
    '["constructor","prototype","polluted"]',
    '["days",{"id":"\\u0000"}]',
    '[{"id":"\\ud800"}]',
    '["title","__proto__"]',
    '"title"',
    '[]',
    '[null]',
    '[-1]',
    `[${'"a",'.repeat(40)}"b"]`,
  ];

  function miniappFrame(version: number): { kind: string; text: string } {
    const opId = j(`h${n++}`);
    const kind = rng.weighted({
      'op-poison-value': 6,
      'op-wrong-types': 4,
      'op-deep-value': 1,
      'op-1mb': 1,
      'type-deep': 1,
      'type-unknown': 2,
      'not-an-object': 1,
      'bad-json': 2,
      'proto-frame': 2,
      'resume-bad': 1,
    });
    const op = (k: string, path: string, val: string) => `{"kind":${k},"path":${path},"value":${val}}`;
    switch (kind) {
      case 'op-poison-value':
        return {
          kind,
          text: `{"type":"op","opId":${opId},"baseVersion":${version},"op":${op(rng.pick(['"set"', '"insert"']), rng.pick(PATHS), value())}}`,
        };
      case 'op-wrong-types':
        return {
          kind,
          text: `{"type":"op","opId":${rng.pick([opId, value()])},"baseVersion":${rng.pick(['"0"', '-1', '1.5', 'null', '1e400', String(version)])},"op":${rng.pick([value(), op(value(), value(), value()), '[]'])}}`,
        };
      case 'op-deep-value':
        return {
          kind,
          text: `{"type":"op","opId":${opId},"baseVersion":${version},"op":${op('"set"', '["members"]', DEEP_ARRAY)}}`,
        };
      case 'op-1mb':
        return {
          kind,
          text: `{"type":"op","opId":${opId},"baseVersion":${version},"op":${op('"set"', '["title"]', ONE_MB_JSON)}}`,
        };
      case 'type-deep':
        return { kind, text: `{"type":${DEEP_ARRAY}}` };
      case 'type-unknown':
        return {
          kind,
          text: `{"type":${rng.pick(['"nope"', '7', 'null', '"OP"', '"__proto__"', string()])},"opId":${opId}}`,
        };
      case 'not-an-object':
        return { kind, text: rng.pick(['[1,2]', '"op"', 'null', '42', '[]', '"\\u0000"']) };
      case 'bad-json':
        return { kind, text: rng.pick(['{"type":"op",', '{', '}{', '{"type":"op"}}', "{'type':'op'}", '\u0000', '']) };
      case 'proto-frame':
        return {
          kind,
          text: `{"type":"op","__proto__":{"type":"resume"},"opId":${opId},"baseVersion":${version},"op":${op('"set"', rng.pick(PATHS), protoObject())}}`,
        };
      default:
        return { kind, text: `{"type":"resume","since":${rng.pick(['-1', '"0"', 'null', '1e400', '{}', value()])}}` };
    }
  }

  function relayEvent(): { kind: string; text: string } {
    const id = `hostile_${seed}_${n++}`;
    const sender = `+1999${String(rng.int(1e7)).padStart(7, '0')}`;
    // A Map: `__proto__` is then a key like any other, not the object's prototype.
    const base = new Map<string, string>([
      ['id', j(id)],
      ['type', '"message"'],
      ['chat', `{"guid":${j(`iMessage;-;${sender}`)},"group":false}`],
      ['sender', j(sender)],
      ['text', j('hostile hello')],
      ['sentAt', j(new Date().toISOString())],
    ]);
    const kind = rng.weighted({
      valid: 1,
      'poison-text': 3,
      'poison-guid': 2,
      'poison-sender': 2,
      'poison-id': 2,
      'wrong-type': 2,
      'deep-type': 1,
      'deep-object': 1,
      'proto-key': 2,
      'huge-text': 1,
    });
    switch (kind) {
      case 'poison-text':
        base.set('text', string());
        break;
      case 'poison-guid':
        base.set('chat', `{"guid":${string()},"group":${rng.pick(['false', 'true', '"yes"'])}}`);
        break;
      case 'poison-sender':
        base.set('sender', string());
        break;
      case 'poison-id':
        base.set('id', rng.pick([string(), '7', 'null', '""', j('x'.repeat(300))]));
        break;
      case 'wrong-type':
        base.set(rng.pick(['type', 'chat', 'sentAt', 'text']), value());
        break;
      case 'deep-type':
        base.set('type', DEEP_ARRAY);
        break;
      case 'deep-object':
        base.set('text', DEEP_OBJECT);
        break;
      case 'proto-key':
        base.set('__proto__', protoObject());
        break;
      case 'huge-text':
        base.set('text', ONE_MB_JSON);
        break;
    }
    const text = `{${[...base].map(([k, v]) => `${j(k)}:${v}`).join(',')}}`;
    return { kind, text };
  }

  return {
    string,
    value,
    miniappFrame,
    relayEvent,
    badUserText: () => j(`${rng.pick(['Lisbon', '', 'x'])}${rng.pick(POISON_STRINGS)}`),
  };
}
