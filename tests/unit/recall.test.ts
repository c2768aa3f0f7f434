/**
 * What the model is shown of a conversation (`recallFrom`) and with a message (`photosInView`),
 * held to the chains of filters and maps they replaced (written out below as the reference):
 * the same turns, photos and order for any page of messages.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FORGOTTEN_REPLY } from '../../actors/conversationRules.ts';
import { IMAGE_TYPES, photosInView, recallFrom } from '../../src/conversation/createConversationKind.ts';
import type { Turn } from '../../src/store/conversationRepository.ts';

const HISTORY_TURNS = 20;
const PHOTOS_IN_VIEW = 3;

function referenceRecall(page: Turn[], stage: string, memories: string[], excludeMessageId: string) {
  const turns = page
    .filter((m) => m.id !== excludeMessageId)
    .slice(0, HISTORY_TURNS)
    .reverse();
  return {
    history: turns
      .filter((m) => m.text && m.text !== FORGOTTEN_REPLY)
      .map((m) =>
        m.direction === 'out'
          ? { role: 'assistant' as const, text: m.text }
          : { role: 'user' as const, sender: m.sender, text: m.text },
      ),
    memories,
    photos: page
      .flatMap((m) =>
        m.attachments.filter((a) => a.description && IMAGE_TYPES.has(a.mime)).map((a) => a.description as string),
      )
      .slice(0, PHOTOS_IN_VIEW)
      .reverse(),
    stage,
  };
}

function referencePhotos(
  inView: string[],
  described: Record<string, string>,
  attachments: { id: string; mime: string }[],
): string[] {
  const own = Object.entries(described)
    .filter(([id]) => IMAGE_TYPES.has(attachments.find((a) => a.id === id)?.mime ?? ''))
    .map(([, d]) => d);
  return [...inView, ...own];
}

const mime = fc.constantFrom('image/jpeg', 'image/png', 'application/pdf', 'text/plain');
const attachmentId = fc.constantFrom('a', 'b', 'c', '1', '2');
const attachment = fc.record(
  { id: attachmentId, mime, description: fc.option(fc.constantFrom('', 'a red bike', 'a cat'), { nil: undefined }) },
  { requiredKeys: ['id', 'mime'] },
);
const message = fc.record({
  id: fc.constantFrom('in_1', 'in_2', 'out_1', 'in_3', 'out_3', 'in_4'),
  sender: fc.constantFrom('+15550001', '+15550002', 'sage'),
  direction: fc.constantFrom('in' as const, 'out' as const),
  text: fc.constantFrom('', 'hello', 'how was the trip?', FORGOTTEN_REPLY),
  attachments: fc.array(attachment, { maxLength: 3 }),
});

describe('recallFrom', () => {
  it('shows the same turns and photos, in the same order, as the filters it replaced', () => {
    fc.assert(
      fc.property(fc.array(message, { maxLength: 30 }), fc.constantFrom('in_1', 'in_3', 'none'), (page, exclude) => {
        expect(recallFrom(page, 'friend', ['m'], exclude)).toEqual(referenceRecall(page, 'friend', ['m'], exclude));
      }),
      { numRuns: 500 },
    );
  });

  it('keeps the last 20 turns without the excluded message, oldest first, and at most 3 photos', () => {
    const page: Turn[] = Array.from({ length: 25 }, (_, i) => ({
      id: `in_${24 - i}`,
      sender: '+15550001',
      direction: 'in',
      text: `message ${24 - i}`,
      attachments: [{ id: `p${i}`, mime: 'image/png', description: `photo ${24 - i}` }],
    }));
    const recall = recallFrom(page, 'new', [], 'in_24');
    expect(recall.history.map((h) => h.text)).toEqual(Array.from({ length: 20 }, (_, i) => `message ${i + 4}`));
    expect(recall.photos).toEqual(['photo 22', 'photo 23', 'photo 24']);
  });
});

describe('photosInView', () => {
  it('adds the message’s described images after those in view, as the filters it replaced did', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('old photo', 'older photo'), { maxLength: 3 }),
        fc.dictionary(attachmentId, fc.constantFrom('a red bike', 'a pdf (not opened)'), { maxKeys: 4 }),
        fc.array(fc.record({ id: attachmentId, mime }), { maxLength: 4 }),
        (inView, described, attachments) => {
          expect(photosInView(inView, described, attachments)).toEqual(referencePhotos(inView, described, attachments));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('returns the photos in view themselves when the message has none of its own', () => {
    const inView = ['a cat'];
    expect(photosInView(inView, {}, [])).toBe(inView);
  });
});
