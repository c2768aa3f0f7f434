/**
 * Relay events (docs/protocol.md "Relay event"): validation of what the relay pushes in, and the
 * conversation each event belongs to. Limits come from config, so the schema is built once
 * per server. Every string is `text()`: well-formed, without U+0000, or refused here.
 */
import { z } from 'zod';
import { directKey, groupKey } from '../../actors/conversationKey.ts';
import { text } from '../../actors/wellFormedText.ts';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';
import { describeIssue, excerpt } from '../transport/validate.ts';

export const E164 = /^\+[1-9]\d{6,14}$/;
const MIME = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$/i;
/** Canonical base64: whole quads, padding only at the end. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Bytes that base64 `data` decodes to. */
export function decodedLength(data: string): number {
  const padding = data.endsWith('==') ? 2 : data.endsWith('=') ? 1 : 0;
  return (data.length / 4) * 3 - padding;
}
/** ISO 8601 timestamp with a zone (Z or ±HH:MM). */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;
export const MAX_ATTACHMENTS = 10;
export const MAX_BATCH = 100;

export interface Attachment {
  id: string;
  mime: string;
  /** Inline base64 data. */
  data?: string;
  /** A URL on one of RELAY_MEDIA_HOSTS. */
  url?: string;
  name?: string;
}

export interface RelayEvent {
  id: string;
  type: 'message';
  chat: { guid: string; group: boolean; participants?: string[] };
  sender: string;
  persona: string;
  text?: string;
  attachments: Attachment[];
  /** The id of the message this one answers (e.g. an `out_…` send of Sage's). */
  replyTo?: string;
  sentAt: string;
}

export interface RelayEventLimits {
  maxTextChars: number;
  maxAttachmentBytes: number;
  mediaHosts: readonly string[];
}

export function limitsFrom(config: Config): RelayEventLimits {
  return {
    maxTextChars: config.limits.maxTextChars,
    maxAttachmentBytes: config.limits.maxAttachmentBytes,
    mediaHosts: config.relay.mediaHosts,
  };
}

const id = text().min(1).max(200);
const phone = text().max(200).regex(E164, 'must be a phone number in E.164 form (+15551234567)');

export function relayEventSchema(limits: RelayEventLimits) {
  const maxBase64 = Math.ceil(limits.maxAttachmentBytes / 3) * 4;
  const attachment = z
    .object({
      id,
      mime: text().max(129).regex(MIME, 'must be a MIME type such as image/jpeg'),
      data: text()
        .min(4, 'must not be empty')
        .max(maxBase64, `must decode to at most ${limits.maxAttachmentBytes} bytes`)
        .regex(BASE64, 'must be base64')
        .refine(
          (d) => decodedLength(d) <= limits.maxAttachmentBytes,
          `must decode to at most ${limits.maxAttachmentBytes} bytes`,
        )
        .optional(),
      url: text()
        .max(2000)
        .url()
        .refine((u) => {
          if (!URL.canParse(u)) return false;
          const url = new URL(u);
          return url.protocol === 'https:' && limits.mediaHosts.includes(url.hostname);
        }, 'must be an https URL on one of RELAY_MEDIA_HOSTS')
        .optional(),
      name: text().max(200).optional(),
    })
    .strict()
    .refine((a) => (a.data === undefined) !== (a.url === undefined), 'needs exactly one of data or url');
  return z
    .object({
      id,
      type: z.literal('message'),
      chat: z.object({ guid: id, group: z.boolean(), participants: z.array(phone).max(100).optional() }).strict(),
      sender: phone,
      persona: text()
        .regex(/^[a-z][a-z0-9_-]{0,63}$/, 'must be a lower-case persona name')
        .default('sage'),
      text: text().max(limits.maxTextChars, `must be at most ${limits.maxTextChars} characters`).optional(),
      attachments: z.array(attachment).max(MAX_ATTACHMENTS).default([]),
      replyTo: id.optional(),
      sentAt: text().regex(TIMESTAMP, 'must be an ISO 8601 timestamp with a zone'),
    })
    .strict()
    .refine((e) => (e.text !== undefined && e.text.trim() !== '') || e.attachments.length > 0, {
      message: 'needs text or attachments',
      path: ['text'],
    });
}

export type RelayEventSchema = ReturnType<typeof relayEventSchema>;

/** Validates one event; throws `unknown_event_type` or `validation_failed` with the path. */
export function parseRelayEvent(schema: RelayEventSchema, value: unknown): RelayEvent {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AppError('validation_failed', 'an event is a JSON object', { path: [] });
  }
  const type = (value as { type?: unknown }).type;
  if (type !== 'message') {
    throw new AppError('unknown_event_type', `unknown event type ${excerpt(type)}`, { path: ['type'] });
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const { path, message } = describeIssue(result.error.issues[0]);
    throw new AppError('validation_failed', message, { path });
  }
  return result.data as RelayEvent;
}

/** The conversation (and memory container) of an event: direct chats are per sender and persona. */
export function conversationKeyOf(e: Pick<RelayEvent, 'chat' | 'sender' | 'persona'>): string {
  return e.chat.group ? groupKey(e.chat.guid) : directKey(e.sender, e.persona);
}
