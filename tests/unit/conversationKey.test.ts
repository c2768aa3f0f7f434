/** The conversation key, spelled in one place: made, parsed, and told apart. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  directKey,
  groupKey,
  isConversationKey,
  isDirectKeyOf,
  isGroupKey,
  parseConversationKey,
} from '../../actors/conversationKey.ts';

const phone = fc.stringMatching(/^\+[1-9]\d{6,14}$/);
const persona = fc.stringMatching(/^[a-z][a-z0-9_-]{0,20}$/);
const guid = fc.string({ minLength: 1, maxLength: 200 });

describe('conversation keys', () => {
  it('parse back to what made them', () => {
    fc.assert(
      fc.property(phone, persona, guid, (p, name, g) => {
        expect(parseConversationKey(directKey(p, name))).toEqual({ kind: 'direct', persona: name, chatGuid: null });
        expect(parseConversationKey(groupKey(g))).toEqual({ kind: 'group', persona: 'sage', chatGuid: g });
        expect(isGroupKey(groupKey(g))).toBe(true);
        expect(isGroupKey(directKey(p, name))).toBe(false);
      }),
    );
  });

  it("name a person's own direct chats only", () => {
    expect(isDirectKeyOf(directKey('+15551234567', 'sage'), '+15551234567')).toBe(true);
    expect(isDirectKeyOf(directKey('+15551234567', 'sage'), '+1555123456')).toBe(false);
    expect(isDirectKeyOf('user_+15551234567_persona_', '+15551234567')).toBe(false);
    expect(isDirectKeyOf(groupKey('user_+15551234567_persona_sage'), '+15551234567')).toBe(false);
  });

  it('refuse what is not a key', () => {
    for (const bad of ['', 'user_15551234567_persona_sage', 'user_+15551234567_persona_Sage', 'group_', 'x_y']) {
      expect(isConversationKey(bad), bad).toBe(false);
      expect(() => parseConversationKey(bad)).toThrow('not a conversation key');
    }
  });
});
