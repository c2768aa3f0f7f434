/**
 * A small local HTTP server that speaks the parts of the OpenAI API Sage uses (chat
 * completions, with images, and moderations), so the real `openai` client is exercised
 * end to end. Tests script its behaviour and read the prompts it was sent.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { onCleanup } from './cleanup.ts';

export interface ChatRequest {
  model: string;
  messages: { role: string; content: string | { type: string; text?: string; image_url?: { url: string } }[] }[];
}

/** How a kind of request fails: `error` answers 500, `hang` never answers, a number answers that status. */
export type FakeFailure = 'error' | 'hang' | 400 | 401 | 429 | null;

export type RequestKind = 'chat' | 'image' | 'moderation';

export interface FakeBehaviour {
  /** Reply text for a chat (non-image) request; default echoes the last user message. */
  reply?: (req: ChatRequest) => string;
  /** Description returned for image requests. */
  describe?: string;
  /** Delay (ms) before answering image requests. */
  imageDelayMs?: number;
  /** Delay (ms) before answering chat requests. */
  chatDelayMs?: number;
  /** How chat (non-image) requests fail. */
  chatFailure?: FakeFailure;
  /** Only this many chat requests fail (then they are answered); unset: all of them. */
  chatFailureCount?: number;
  /** How image (vision) requests fail. */
  imageFailure?: FakeFailure;
  /** How moderation requests fail. */
  moderationFailure?: FakeFailure;
  /** `Retry-After` header of a 429 answer (seconds); none when unset. */
  retryAfter?: string;
  /** The key requests must carry (`Authorization: Bearer <key>`); others are answered 401. Unset: any key. */
  apiKey?: string;
  /** Words that make a moderation input flagged (category by word). */
  flag?: Record<string, string>;
}

export interface FakeOpenAI {
  baseUrl: string;
  behaviour: FakeBehaviour;
  /** Every chat request (text prompts and image requests) in arrival order. */
  chats: ChatRequest[];
  moderations: string[];
  /** Every request that reached the server, in arrival order (`at`: Date.now() on arrival), whatever its answer. */
  arrivals: { kind: RequestKind; at: number }[];
  /** How many requests of `kind` reached the server (failed, hanging and refused ones included). */
  count(kind: RequestKind): number;
  /** The text of every system + user + assistant message of a text chat request, joined. */
  promptTexts(): string[];
  /** The whole prompt (system and every turn) of the reply to the message containing `marker`; throws when there is none. */
  promptFor(marker: string): string;
  close(): Promise<void>;
}

export const isImageRequest = (r: ChatRequest) =>
  r.messages.some((m) => Array.isArray(m.content) && m.content.some((c) => c.type === 'image_url'));

export async function startFakeOpenAI(behaviour: FakeBehaviour = {}): Promise<FakeOpenAI> {
  const chats: ChatRequest[] = [];
  const moderations: string[] = [];
  const hanging = new Set<http.ServerResponse>();
  const arrivals: FakeOpenAI['arrivals'] = [];
  let chatFailures = 0;
  const fake: FakeOpenAI = {
    baseUrl: '',
    behaviour,
    chats,
    moderations,
    arrivals,
    count: (kind) => arrivals.filter((a) => a.kind === kind).length,
    promptTexts: () =>
      chats
        .filter((c) => !isImageRequest(c))
        .map((c) => c.messages.map((m) => (typeof m.content === 'string' ? m.content : '')).join('\n')),
    promptFor: (marker) => {
      const prompt = fake.promptTexts().find((p) => p.slice(p.lastIndexOf('\n') + 1).includes(marker));
      if (prompt === undefined) throw new Error(`no prompt answering "${marker}"`);
      return prompt;
    },
    close: async () => {},
  };
  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  /** Answers with `failure` and returns true, or returns false when there is none. */
  const fail = (res: http.ServerResponse, failure: FakeFailure | undefined): boolean => {
    if (failure === null || failure === undefined) return false;
    if (failure === 'hang') hanging.add(res);
    else if (failure === 'error') json(res, 500, { error: { message: 'the model is down', type: 'server_error' } });
    else {
      if (failure === 429 && fake.behaviour.retryAfter !== undefined)
        res.setHeader('retry-after', fake.behaviour.retryAfter);
      json(res, failure, { error: { message: `scripted ${failure}`, type: 'invalid_request_error' } });
    }
    return true;
  };
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const body = raw ? JSON.parse(raw) : {};
      const b = fake.behaviour;
      const authorized = !b.apiKey || req.headers.authorization === `Bearer ${b.apiKey}`;
      if (req.url?.endsWith('/moderations')) {
        const input = String(body.input);
        moderations.push(input);
        arrivals.push({ kind: 'moderation', at: Date.now() });
        if (fail(res, authorized ? b.moderationFailure : 401)) return;
        const hits = Object.entries(b.flag ?? {}).filter(([word]) => input.toLowerCase().includes(word.toLowerCase()));
        const categories: Record<string, boolean> = {
          harassment: false,
          'self-harm': false,
          violence: false,
          sexual: false,
        };
        for (const [, category] of hits) categories[category] = true;
        json(res, 200, {
          id: 'modr-1',
          model: body.model,
          results: [{ flagged: hits.length > 0, categories, category_scores: {} }],
        });
        return;
      }
      if (req.url?.endsWith('/chat/completions')) {
        const chat = body as ChatRequest;
        chats.push(chat);
        const image = isImageRequest(chat);
        const answer = (text: string) =>
          json(res, 200, {
            id: `chatcmpl-${chats.length}`,
            object: 'chat.completion',
            created: Math.floor(Date.now() / 1000),
            model: chat.model,
            choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: text } }],
            usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
          });
        arrivals.push({ kind: image ? 'image' : 'chat', at: Date.now() });
        if (!authorized) return void fail(res, 401);
        if (image) {
          if (fail(res, b.imageFailure)) return;
          setTimeout(() => answer(b.describe ?? 'a photo of something'), b.imageDelayMs ?? 0);
          return;
        }
        if (b.chatFailure && (b.chatFailureCount === undefined || chatFailures < b.chatFailureCount)) {
          chatFailures++;
          fail(res, b.chatFailure);
          return;
        }
        const last = [...chat.messages].reverse().find((m) => m.role === 'user');
        const text = b.reply
          ? b.reply(chat)
          : `Model reply to: ${typeof last?.content === 'string' ? last.content : ''}`;
        setTimeout(() => answer(text), b.chatDelayMs ?? 0);
        return;
      }
      json(res, 404, { error: { message: `no route ${req.url}` } });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  fake.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  fake.close = () =>
    new Promise((r) => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      server.close(() => r());
    });
  onCleanup(() => fake.close());
  return fake;
}

/** Server env for a brain talking to `fake`. */
export function openAIEnv(fake: FakeOpenAI, extra: Record<string, string> = {}): Record<string, string> {
  return { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseUrl, ...extra };
}
