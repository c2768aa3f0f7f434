/**
 * Memory containers (docs/architecture.md). A tag can only be made from a
 * conversation, and it is that conversation's key: `user_{phone}_persona_{id}` for a direct
 * chat, `group_{chat_guid}` for a group. The memory store takes nothing else, so no code path
 * can read one chat's memories while answering another.
 */
import { isConversationKey } from '../../actors/conversationKey.ts';

declare const brand: unique symbol;

export type ContainerTag = string & { readonly [brand]: 'ContainerTag' };

export function isContainerTag(value: string): value is ContainerTag {
  return isConversationKey(value);
}

/** The container of a conversation; throws for anything that is not a conversation key. */
export function containerTagOf(conversation: { key: string }): ContainerTag {
  if (!isContainerTag(conversation.key)) throw new Error(`not a conversation key: ${JSON.stringify(conversation.key)}`);
  return conversation.key;
}
