/**
 * Sage's brain on the OpenAI API (or any compatible server via OPENAI_BASE_URL): chat replies,
 * vision for photos, and moderation, each behind timeout + retry + circuit breaker.
 */
import OpenAI from 'openai';
import { toWellFormedText } from '../../actors/text.ts';
import type { Config } from '../config.ts';
import type { Logger } from '../observability/logger.ts';
import type { Brain, ModerationResult, Photo, ReplyRequest } from './Brain.ts';
import { classifyLocally } from './localModeration.ts';
import { buildPrompt } from './prompt.ts';
import { createResilience, type Resilient } from './resilience.ts';

export interface OpenAIBrain extends Brain {
  /** Breaker states by dependency, for metrics. */
  breakers(): Record<string, number>;
}

const permanent = (err: Error) =>
  err instanceof OpenAI.APIError &&
  typeof err.status === 'number' &&
  err.status >= 400 &&
  err.status < 500 &&
  err.status !== 429 &&
  err.status !== 408;

/** The wait a 429 asks for (`retry-after-ms`, else `retry-after` in seconds or as a date), in ms. */
function retryAfterMs(err: Error): number | undefined {
  if (!(err instanceof OpenAI.APIError) || err.status !== 429 || !err.headers) return undefined;
  const ms = err.headers.get('retry-after-ms');
  if (ms !== null && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const after = err.headers.get('retry-after');
  if (after === null || after.trim() === '') return undefined;
  const at = Number.isFinite(Number(after)) ? Date.now() + Number(after) * 1000 : Date.parse(after);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * The model's text made storable: PostgreSQL refuses U+0000 and lone surrogates, and a
 * reply that held one would fail its conversation's commit (and, before that was isolated,
 * every other write of the same group commit).
 */
function storable(content: string | null | undefined): string | undefined {
  return content == null ? undefined : toWellFormedText(content).trim();
}

/** `photoLateMs`: the longest one photo is looked at (PHOTO_LATE_MS); callers stop it sooner with their signal. */
export function createOpenAIBrain(config: Config['openai'], photoLateMs: number, log: Logger): OpenAIBrain {
  // Our own policies retry and time out; the client's would double them.
  const client = new OpenAI({
    apiKey: config.apiKey,
    baseURL: config.baseUrl,
    maxRetries: 0,
    timeout: Math.max(config.timeoutMs, photoLateMs) * 2,
  });
  const common = {
    breakerFailures: config.breakerFailures,
    halfOpenAfterMs: config.breakerHalfOpenMs,
    log,
    isPermanent: permanent,
    retryAfterMs,
  };
  const model: Resilient = createResilience({ name: 'model', timeoutMs: config.timeoutMs, attempts: 2, ...common });
  const vision: Resilient = createResilience({ name: 'vision', timeoutMs: photoLateMs, attempts: 1, ...common });
  const moderation: Resilient = createResilience({
    name: 'moderation',
    timeoutMs: Math.min(config.timeoutMs, 5000),
    attempts: 2,
    ...common,
  });

  return {
    mode: 'openai',
    breakers: () => ({ model: model.state(), vision: vision.state(), moderation: moderation.state() }),

    async reply(request: ReplyRequest, caller?: AbortSignal): Promise<string> {
      const completion = await model.run(
        (signal) =>
          client.chat.completions.create(
            { model: config.model, messages: buildPrompt(request), max_tokens: 400 },
            { signal },
          ),
        caller,
      );
      const text = storable(completion.choices[0]?.message?.content);
      if (!text) throw new Error('the model returned no text');
      return text;
    },

    async describePhoto(photo: Photo, caller?: AbortSignal): Promise<string> {
      const completion = await vision.run(
        (signal) =>
          client.chat.completions.create(
            {
              model: config.visionModel,
              max_tokens: 200,
              messages: [
                {
                  role: 'user',
                  content: [
                    { type: 'text', text: 'Describe this photo in one or two sentences, as you would to a friend.' },
                    {
                      type: 'image_url',
                      image_url: { url: `data:${photo.mime};base64,${photo.data.toString('base64')}` },
                    },
                  ],
                },
              ],
            },
            { signal },
          ),
        caller,
      );
      const text = storable(completion.choices[0]?.message?.content);
      if (!text) throw new Error('the vision model returned no text');
      return text;
    },

    async moderate(text: string, caller?: AbortSignal): Promise<ModerationResult> {
      try {
        const result = await moderation.run(
          (signal) => client.moderations.create({ model: config.moderationModel, input: text }, { signal }),
          caller,
        );
        const r = result.results[0];
        const categories = Object.entries(r?.categories ?? {})
          .filter(([, on]) => on === true)
          .map(([name]) => name);
        const selfHarm = categories.some((c) => c.startsWith('self-harm') || c.startsWith('self_harm'));
        return { flagged: Boolean(r?.flagged), selfHarm, categories };
      } catch (err) {
        // Moderation must not go dark with the API: the local classifier stands in.
        log.warn({ err: { message: (err as Error).message } }, 'moderation API failed; using the local classifier');
        return classifyLocally(text);
      }
    },
  };
}
