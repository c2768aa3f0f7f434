/**
 * The conversation's domain types: what the relay sends in, what one processed message
 * changes (the commit the store writes), what goes out to the relay, and the actor's context.
 * The machine (`conversation.machine.ts`), the store, the relay and the transport share them.
 */
import type { RelationshipCounters } from './conversationRules.ts';

/** An attachment as the relay sent it: inline base64 `data` or a `url` on an allowed host. */
export interface InboundAttachment {
  id: string;
  mime: string;
  data?: string;
  url?: string;
}

/** What the relay sent. Attachment data is only in memory while the message is worked on. */
export interface InboundMessage {
  eventId: string;
  sender: string;
  chatGuid: string;
  text: string;
  replyTo?: string;
  attachments: InboundAttachment[];
  /** Milliseconds since the epoch, when the server received it. */
  receivedAt: number;
}

/** One relay event for a conversation: its inbox row and its message. */
export interface InboundItem {
  /** The relay_inbox row. */
  seq: number;
  message: InboundMessage;
  /** The sender is over their rate limit: store, remember, but do not answer now. */
  throttled: boolean;
}

/**
 * A relay event, and `more`: the conversation's events that waited behind it, in order. They
 * are worked through one after the other and committed together (`processWork`).
 */
export interface Inbound extends InboundItem {
  type: 'inbound';
  more?: InboundItem[];
}

export interface Moderation {
  flagged: boolean;
  selfHarm: boolean;
  categories: string[];
}

export interface Recall {
  /** Earlier turns, oldest first. */
  history: { role: 'user' | 'assistant'; sender?: string; text: string }[];
  memories: string[];
  /** Descriptions of recent photos of this conversation. */
  photos: string[];
  stage: string;
}

export type ReplyKind = 'model' | 'fallback' | 'safety' | 'forget' | 'none';

export interface Work {
  seq: number | null;
  message: InboundMessage;
  throttled: boolean;
  /** A reply owed to a burst, answered after the sender went quiet (no new inbound message). */
  catchUp: boolean;
  moderation: Moderation | null;
  /** Descriptions of this message's attachments, by attachment id. */
  described: Record<string, string>;
  /** What was recalled for the model, set only while it is asked (the commit does not keep it). */
  recall: Recall | null;
  reply: string | null;
  replyKind: ReplyKind;
  /** Throttled but addressed: answered once when the burst is over. */
  owe: boolean;
}

export interface ConversationContext {
  key: string;
  kind: 'direct' | 'group';
  persona: string;
  chatGuid: string | null;
  version: number;
  /** Inbox rows already processed (the most recent ones): a redelivered row is skipped. */
  processed: number[];
  /** Ids of Sage's recent messages in a group: a message answering one of them gets a reply (a direct conversation keeps none). */
  ourMessageIds: string[];
  /** Per throttled sender, the last message of their burst, still to be answered once (oldest first). */
  owed: InboundMessage[];
  work: Work | null;
  /** Why the actor stopped (its output). */
  stop: ConversationOutput | null;
}

export interface MessageRow {
  id: string;
  sender: string;
  direction: 'in' | 'out';
  text: string;
  attachments: { id: string; mime: string; description?: string }[];
  /** Milliseconds since the epoch. */
  at: number;
}

export interface SendFrame {
  type: 'send';
  id: string;
  replyTo: string;
  chat: { guid: string; group: boolean };
  to?: string;
  text: string;
}

/** Everything one processed message changes, committed in one transaction. */
export interface ConversationCommit {
  key: string;
  kind: 'direct' | 'group';
  persona: string;
  chatGuid: string;
  version: number;
  inbound: MessageRow | null;
  outbound: MessageRow | null;
  send: SendFrame | null;
  memories: { content: string; sourceMessageId: string }[];
  forget: boolean;
  relationship: { userId: string; persona: string; delta: RelationshipCounters };
  inboxSeq: number | null;
  /** The context once committed (the host persists it as the actor's snapshot). */
  next: ConversationContext;
}

/**
 * `resume`: a conversation restored owing an answer sets its timer again (XState does not set a
 * restored state's timers); sent by the relay's sweep to conversations owing one for too long.
 */
export type ConversationEvent = Inbound | { type: 'passivate' } | { type: 'resume' };

export interface ConversationOutput {
  reason: 'passivated' | 'fenced' | 'failed';
  message?: string;
}

export interface ConversationInput {
  key: string;
}
