/**
 * The hostile user's HTTP requests: bodies that never arrive or arrive a byte at a time,
 * `Content-Length`s past every limit (and past what the HTTP parser reads), bad JSON, wrong
 * content types, poisoned trip titles and participants, and share-link (`sid`) tokens on
 * routes they do not open. Each answer is counted in `tally` as `"<status> <code>"`.
 */
import type { HostileOptions } from './hostileUser.ts';
import { DEEP_OBJECT, INVALID_UTF8 } from './poison.ts';
import { rawRequest } from './rawHttp.ts';

export function createHttpAbuse(o: HostileOptions) {
  const { base, localAddress, tokens, rng, poison, tally } = o;

  /** A complete request with a JSON (or any) body; resolves with `"<status> <code>"`. */
  function http(
    method: string,
    path: string,
    token: string | undefined,
    body: string | Buffer,
    type = 'application/json',
  ) {
    const headers: Record<string, string | number> = { 'Content-Length': Buffer.byteLength(body) };
    if (method === 'POST') headers['Content-Type'] = type;
    if (token) headers.Authorization = `Bearer ${token}`;
    return rawRequest(base, localAddress, { method, path, headers, body, holdMs: 10_000 });
  }

  async function httpAbuse(kind: string): Promise<void> {
    const big = rng.pick([30 * 1024 * 1024, 100 * 1024 * 1024, 2 ** 40]);
    const head = (token: string | undefined, length: number) => ({
      'Content-Type': 'application/json',
      'Content-Length': length,
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
    });
    let outcome: string;
    switch (kind) {
      case 'huge-unauthenticated':
        outcome = await rawRequest(base, localAddress, {
          method: 'POST',
          path: rng.pick(['/v1/miniapps', '/v1/relay/events']),
          headers: head(rng.pick([undefined, tokens.expired, 'garbage']), big),
          body: '{"app":',
          holdMs: 10_000,
        });
        break;
      case 'huge-held': {
        // Authenticated, announcing a big body and sending a few bytes: each holds a body slot
        // of the address until it hangs up; more at once than BODIES_IN_FLIGHT_PER_IP (16).
        const holdMs = 200 + rng.int(600);
        const outcomes = await Promise.all(
          Array.from({ length: 1 + rng.int(24) }, () =>
            rawRequest(base, localAddress, {
              method: 'POST',
              path: '/v1/relay/events',
              headers: head(tokens.relay, rng.pick([big, 1_000_000])),
              body: '{"events":[',
              holdMs,
            }),
          ),
        );
        for (const held of outcomes.slice(1)) tally.add(`http:${kind}`, held);
        outcome = outcomes[0];
        break;
      }
      case 'slowloris': {
        const body = Buffer.from(JSON.stringify({ app: 'trip-planner', title: 'slow' }));
        outcome = await rawRequest(base, localAddress, {
          method: 'POST',
          path: '/v1/miniapps',
          headers: head(tokens.user, body.length + rng.int(2) * 10),
          trickle: { bytes: body, everyMs: 10 + rng.int(20) },
          holdMs: 500,
        });
        break;
      }
      case 'miniapp-over-64k':
        outcome = await rawRequest(base, localAddress, {
          method: 'POST',
          path: '/v1/miniapps',
          headers: head(tokens.user, 64 * 1024 + 1 + rng.int(1e6)),
          body: '{"app":"trip-planner","title":"',
          holdMs: 10_000,
        });
        break;
      case 'bad-body': {
        const body = rng.pick<string | Buffer>([
          '{"app":',
          '[1,2,3]',
          'null',
          '"x"',
          Buffer.concat([Buffer.from('{"app":"'), INVALID_UTF8, Buffer.from('"}')]),
          DEEP_OBJECT.slice(0, 60_000),
        ]);
        outcome = await http(
          'POST',
          rng.pick(['/v1/miniapps', '/v1/relay/events']),
          rng.pick([tokens.user, tokens.relay]),
          body,
        );
        break;
      }
      case 'wrong-content-type':
        outcome = await http('POST', '/v1/miniapps', tokens.user, '{"app":"trip-planner"}', 'text/plain');
        break;
      case 'poisoned-trip': {
        const body = rng.pick([
          `{"app":"trip-planner","title":${poison.badUserText()}}`,
          `{"app":"trip-planner","participants":["+15550001",${poison.badUserText()}]}`,
          `{"app":${poison.badUserText()}}`,
          `{"app":"trip-planner","chat":${poison.string()}}`,
          `{"app":"trip-planner","__proto__":{"title":"x"},"constructor":{"prototype":{"x":1}}}`,
        ]);
        outcome = await http('POST', '/v1/miniapps', tokens.user, body);
        break;
      }
      case 'poisoned-participant':
        outcome = await http(
          'POST',
          `/v1/miniapps/${o.ownTrip}/participants`,
          tokens.user,
          rng.pick([`{"user":${poison.badUserText()}}`, `{"user":${poison.value()}}`, '{"__proto__":{"user":"x"}}']),
        );
        break;
      case 'sid-token': {
        const [method, path, body] = rng.pick([
          ['POST', '/v1/miniapps', '{"app":"trip-planner"}'],
          ['POST', `/v1/miniapps/${o.ownTrip}/participants`, '{"user":"+19990000777"}'],
          ['GET', `/v1/miniapps/${rng.pick(o.goodTrips)}`, ''],
          ['GET', `/v1/conversations/${encodeURIComponent('user_+19990000666_persona_sage')}/messages`, ''],
        ]);
        outcome = await http(method, path, tokens.sidOwn, body);
        break;
      }
      default:
        throw new Error(`unknown http kind ${kind}`);
    }
    tally.add(`http:${kind}`, outcome);
  }

  return { http, httpAbuse };
}
