/**
 * The logger's censoring of secrets (`src/observability/logger.ts`): what a line may carry of a
 * token, a password or an OAuth credential, at the top level and below, and that the caller's
 * objects are left as they were. And the correlation id on its lines (`context.ts`).
 */
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.ts';
import { currentContext, withContext } from '../../src/observability/context.ts';
import { censorSecrets, createLogger } from '../../src/observability/logger.ts';
import { errorReply } from '../../src/transport/http.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  return { lines, log: createLogger({ level: 'info', format: 'json', destination }) };
}

describe('the logger', () => {
  it('censors secret keys at the top level and below, and keeps everything else', () => {
    const { lines, log } = capture();
    const headers = { authorization: 'Bearer abc', 'sec-websocket-protocol': 'archety.v1, bearer.xyz', accept: '*/*' };
    const tokens = [{ provider: 'calendar', refresh_token: 'r1', scope: 'read' }];
    log.info(
      {
        token: 't',
        password: 'p',
        user: '+*******0001',
        req: { headers },
        headers,
        tokens,
        nested: { accessToken: 'a' },
      },
      'a line',
    );
    expect(lines[0]).toMatchObject({
      msg: 'a line',
      token: '[redacted]',
      password: '[redacted]',
      user: '+*******0001',
      req: { headers: { authorization: '[redacted]', 'sec-websocket-protocol': '[redacted]', accept: '*/*' } },
      headers: { authorization: '[redacted]', 'sec-websocket-protocol': '[redacted]', accept: '*/*' },
      tokens: [{ provider: 'calendar', refresh_token: '[redacted]', scope: 'read' }],
      nested: { accessToken: '[redacted]' },
    });
    // The caller's objects are untouched.
    expect(headers.authorization).toBe('Bearer abc');
    expect(tokens[0].refresh_token).toBe('r1');
  });

  it('keeps an error an error (type, message, stack) while censoring a secret it carries', () => {
    const { lines, log } = capture();
    const err = Object.assign(new TypeError('the provider said no'), { access_token: 'secret!', status: 400 });
    log.warn({ err }, 'refresh failed');
    const logged = lines[0].err as Record<string, unknown>;
    expect(logged).toMatchObject({ type: 'TypeError', message: 'the provider said no', status: 400 });
    expect(logged.access_token).toBe('[redacted]');
    expect(String(logged.stack)).toContain('the provider said no');
    expect(err.access_token).toBe('secret!');
    expect(JSON.stringify(lines)).not.toContain('secret!');
  });

  it('returns a line without secrets as it is (nothing copied)', () => {
    const line = { method: 'POST', url: '/v1/relay/events', status: 202, ms: 1.2, err: new Error('x') };
    expect(censorSecrets(line)).toBe(line);
    const bytes = { body: Buffer.alloc(1 << 20) };
    expect(censorSecrets(bytes)).toBe(bytes);
  });

  it('never lets a secret value through, at any of the first three levels (property)', () => {
    const secretKey = fc.constantFrom('token', 'authorization', 'password', 'secret', 'refresh_token', 'accessToken');
    const otherKey = fc.constantFrom('a', 'b', 'headers', 'req', 'err', 'items');
    const SECRET = 'S3CR3T';
    // Objects up to three levels deep, secrets under secret keys only.
    const leaf = fc.oneof(
      fc.integer(),
      fc.string({ maxLength: 5 }).filter((s) => !s.includes(SECRET)),
    );
    const level = (inner: fc.Arbitrary<unknown>) =>
      fc.oneof(
        fc
          .dictionary(otherKey, inner, { maxKeys: 3 })
          .chain((o) => fc.option(secretKey).map((k) => (k ? { ...o, [k]: SECRET } : o))),
        fc.array(inner, { maxLength: 2 }),
      );
    const line = level(level(level(leaf)));
    fc.assert(
      fc.property(line, (value) => {
        const before = JSON.stringify(value);
        expect(JSON.stringify(censorSecrets(value))).not.toContain(SECRET);
        expect(JSON.stringify(value)).toBe(before);
      }),
    );
  });
});

describe('the correlation id (`context.ts`)', () => {
  it('is on the lines written synchronously inside withContext, nested scopes restore the outer, a throw restores it too', () => {
    const { lines, log } = capture();
    withContext({ reqId: 'outer' }, () => {
      log.info('a');
      withContext({ reqId: 'inner' }, () => log.info('b'));
      expect(() =>
        withContext({ reqId: 'thrown' }, () => {
          throw new Error('boom');
        }),
      ).toThrow('boom');
      log.info('c');
    });
    log.info('d');
    expect(lines.map((l) => [l.msg, l.reqId])).toEqual([
      ['a', 'outer'],
      ['b', 'inner'],
      ['c', 'outer'],
      ['d', undefined],
    ]);
    expect(currentContext()).toBeUndefined();
  });

  it('is not carried past an await: a line after one names its id itself, and the named id wins', async () => {
    const { lines, log } = capture();
    let resumed: Promise<void> = Promise.resolve();
    withContext({ reqId: 'req-1' }, () => {
      resumed = (async () => {
        await null;
        log.info('after an await');
        log.info({ reqId: 'req-1' }, 'named');
      })();
      log.info({ reqId: 'evt-9' }, 'named over the scope');
    });
    await resumed;
    expect(lines.map((l) => [l.msg, l.reqId])).toEqual([
      ['named over the scope', 'evt-9'],
      ['after an await', undefined],
      ['named', 'req-1'],
    ]);
  });

  it("is on an error answer's line: the 500's `unexpected error` and a 503's warning name the request id", () => {
    const { lines, log } = capture();
    expect(errorReply(new Error('a bug'), log, 'req-500').status).toBe(500);
    expect(errorReply(new AppError('db_unavailable', 'the database is not answering'), log, 'req-503').status).toBe(
      503,
    );
    expect(lines).toEqual([
      expect.objectContaining({ level: 50, reqId: 'req-500', msg: 'unexpected error' }),
      expect.objectContaining({ level: 40, reqId: 'req-503', msg: 'the database is not answering' }),
    ]);
  });
});
