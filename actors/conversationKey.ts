/**
 * The one place a conversation key is spelled. A key names a conversation and is also its
 * memory container: `user_{phone}_persona_{persona}` for a person's direct chat with a
 * persona, `group_{chat guid}` for a group chat (Sage is the group's persona).
 */

const DIRECT = /^user_(\+[1-9]\d{6,14})_persona_([a-z][a-z0-9_-]{0,63})$/;
const GROUP = /^group_(.{1,200})$/s;
const GROUP_PREFIX = 'group_';

export const directKey = (phone: string, persona: string): string => `user_${phone}_persona_${persona}`;
export const groupKey = (chatGuid: string): string => `${GROUP_PREFIX}${chatGuid}`;

/** Whether `key` is well formed: a direct key of a phone number in E.164 and a persona, or a group key. */
export const isConversationKey = (key: string): boolean => DIRECT.test(key) || GROUP.test(key);

export const isGroupKey = (key: string): boolean => key.startsWith(GROUP_PREFIX);

/** Whether `key` is `user`'s own direct conversation (with any persona). */
export const isDirectKeyOf = (key: string, user: string): boolean => DIRECT.exec(key)?.[1] === user;

/** What a key names; throws for anything that is not a conversation key. */
export function parseConversationKey(
  key: string,
): { kind: 'group'; persona: 'sage'; chatGuid: string } | { kind: 'direct'; persona: string; chatGuid: null } {
  const group = GROUP.exec(key);
  if (group) return { kind: 'group', persona: 'sage', chatGuid: group[1] };
  const direct = DIRECT.exec(key);
  if (!direct) throw new Error(`not a conversation key: ${key}`);
  return { kind: 'direct', persona: direct[2], chatGuid: null };
}
