/**
 * Photos not seen within PHOTO_WAIT_MS are still looked at (up to PHOTO_LATE_MS) and then
 * remembered: the message is answered and committed with a placeholder, and the description,
 * when it comes, replaces the placeholder in the stored message and becomes a memory.
 *
 * A description can come before its message is committed: it then waits for the commit
 * (`committed`). A message that is never committed here (its conversation stopped, the event
 * will be worked on again) is given up after PHOTO_LATE_MS. At most `maxInFlight` photos are
 * looked at late at a time: past that, a photo not seen in time is not looked at again.
 */
import { inboundId } from '../../actors/conversation.machine.ts';
import { PHOTO_PENDING } from '../../actors/conversationRules.ts';
import type { Logger } from '../observability/logger.ts';
import type { ConversationRepository } from '../store/conversationRepository.ts';

interface Waiting {
  /** The relay event of the message: the correlation id of the lines written for it. */
  eventId: string;
  containerTag: string;
  /** Descriptions that came before the commit, by attachment id. */
  seen: Map<string, string>;
  onStored: () => void;
}

export class LatePhotos {
  private inFlight = 0;
  /** Messages with photos still being looked at, by message id, until they are committed. */
  private readonly uncommitted = new Map<string, Waiting>();

  constructor(
    private readonly repo: Pick<ConversationRepository, 'rememberLatePhoto'>,
    private readonly lateMs: number,
    private readonly log: Logger,
    private readonly maxInFlight = 100,
  ) {}

  /** How many more photos may be looked at late. */
  get room(): number {
    return this.maxInFlight - this.inFlight;
  }

  /**
   * Takes over the photos of the message of relay event `eventId` that were not seen in time:
   * `looking` maps attachment ids to their description still on its way (null when it failed).
   * `onStored` runs after each description is stored (the actor's cached turns are then stale).
   */
  take(eventId: string, containerTag: string, looking: Map<string, Promise<string | null>>, onStored: () => void) {
    const messageId = inboundId(eventId);
    const waiting: Waiting = { eventId, containerTag, seen: new Map(), onStored };
    this.uncommitted.set(messageId, waiting);
    setTimeout(() => {
      if (this.uncommitted.get(messageId) === waiting) this.uncommitted.delete(messageId);
    }, this.lateMs).unref();
    for (const [attachmentId, description] of looking) {
      this.inFlight++;
      void description
        .then((d) => {
          if (d === null) return;
          if (this.uncommitted.get(messageId) === waiting) waiting.seen.set(attachmentId, d);
          else return this.store(messageId, attachmentId, d, waiting);
        })
        .finally(() => this.inFlight--);
    }
  }

  /** Message `messageId` was committed: descriptions that came before are stored now, later ones as they come. */
  committed(messageId: string): void {
    const waiting = this.uncommitted.get(messageId);
    if (!waiting) return;
    this.uncommitted.delete(messageId);
    for (const [attachmentId, d] of waiting.seen) void this.store(messageId, attachmentId, d, waiting);
  }

  private async store(messageId: string, attachmentId: string, description: string, waiting: Waiting) {
    try {
      const stored = await this.repo.rememberLatePhoto(
        messageId,
        attachmentId,
        description,
        PHOTO_PENDING,
        waiting.containerTag,
      );
      if (stored) waiting.onStored();
      this.log.debug({ reqId: waiting.eventId, attachment: attachmentId, stored }, 'a photo seen late');
    } catch (err) {
      this.log.warn(
        { reqId: waiting.eventId, err: { message: (err as Error).message }, attachment: attachmentId },
        'could not store a photo seen late',
      );
    }
  }
}
