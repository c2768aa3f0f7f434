/**
 * The model prompt for a reply: the persona, this conversation's memories and photos, and its
 * recent turns. Everything in it comes from one conversation (one container); nothing here
 * can reach another's.
 */
import type { ReplyRequest } from './Brain.ts';

export interface PromptMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

const PERSONAS: Record<string, string> = {
  sage:
    'You are Sage, a warm, curious and concise AI companion people text over iMessage. ' +
    'Write like a thoughtful friend: short messages, no markdown, no lists unless asked.',
};

export function personaPrompt(persona: string): string {
  return (
    PERSONAS[persona] ?? `You are ${persona}, a friendly AI companion people text over iMessage. Keep replies short.`
  );
}

export function buildPrompt(r: ReplyRequest): PromptMessage[] {
  const system: string[] = [personaPrompt(r.persona)];
  system.push(
    r.kind === 'group'
      ? 'This is a group chat; several people write, each user message starts with its sender. Answer the latest message.'
      : 'This is a one-to-one chat.',
  );
  system.push(`Your relationship with the person you are answering: ${r.stage}.`);
  if (r.memories.length)
    system.push(`What you remember from this chat:\n${r.memories.map((m) => `- ${m}`).join('\n')}`);
  if (r.photos.length)
    system.push(`Photos shared here that you have looked at:\n${r.photos.map((p) => `- ${p}`).join('\n')}`);
  const messages: PromptMessage[] = [{ role: 'system', content: system.join('\n\n') }];
  for (const turn of r.history) {
    messages.push(
      turn.role === 'assistant'
        ? { role: 'assistant', content: turn.text }
        : { role: 'user', content: r.kind === 'group' && turn.sender ? `${turn.sender}: ${turn.text}` : turn.text },
    );
  }
  messages.push({ role: 'user', content: r.kind === 'group' ? `${r.sender}: ${r.text}` : r.text });
  return messages;
}
