/**
 * The offline brain, used without OPENAI_API_KEY: deterministic replies built from the
 * conversation and its memories, that say plainly they are offline. No network use.
 */
import type { Brain, ModerationResult, Photo, ReplyRequest } from './Brain.ts';
import { classifyLocally } from './localModeration.ts';

const KIND_OF_FILE: Record<string, string> = {
  'image/jpeg': 'JPEG',
  'image/png': 'PNG',
  'image/gif': 'GIF',
  'image/webp': 'WebP',
};

export function createOfflineBrain(): Brain {
  return {
    mode: 'offline',
    async reply(r: ReplyRequest): Promise<string> {
      const parts = [
        `(${r.persona[0].toUpperCase()}${r.persona.slice(1)} is offline right now, so this is an automatic reply.)`,
      ];
      const said = r.text.trim().replace(/\s+/g, ' ');
      const chars = Array.from(said);
      const quoted = chars.length > 140 ? `${chars.slice(0, 137).join('')}…` : said;
      parts.push(said ? `You said: "${quoted}".` : 'You sent me something.');
      if (r.photos.length) parts.push(`About the photo: ${r.photos[r.photos.length - 1]}.`);
      const relevant = pickMemories(said, r.memories);
      if (relevant.length) parts.push(`I remember: ${relevant.join('; ')}.`);
      return parts.join(' ');
    },
    async describePhoto(photo: Photo): Promise<string> {
      const kind = KIND_OF_FILE[photo.mime] ?? photo.mime;
      return `a ${kind} image of ${Math.max(1, Math.round(photo.data.length / 1024))} KB (offline: I cannot see what it shows)`;
    },
    async moderate(text: string): Promise<ModerationResult> {
      return classifyLocally(text);
    },
  };
}

/** Up to two memories sharing words with the message, the most shared first (earlier first on a tie). */
function pickMemories(text: string, memories: string[]): string[] {
  const words = new Set(text.toLowerCase().match(/\p{L}{3,}/gu) ?? []);
  return memories
    .map((m, i) => ({ m, i, score: (m.toLowerCase().match(/\p{L}{3,}/gu) ?? []).filter((w) => words.has(w)).length }))
    .filter((x) => x.score > 0)
    .sort((a, b) => b.score - a.score || a.i - b.i)
    .slice(0, 2)
    .map((x) => x.m);
}
