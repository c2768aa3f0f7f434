/**
 * Which messages sent by the simulator still wait for Sage's reply. Sends come in order per
 * chat and the server answers a throttled burst once (to its last message), so a reply to
 * one of our messages also settles the earlier ones of that chat.
 */
export interface Awaited {
  id: string;
  chat: string;
  /** What was sent, to name it if the reply never comes. */
  text: string;
}

export class ReplyTracker {
  private waiting: Awaited[] = [];
  private readonly listeners = new Set<() => void>();

  expect(message: Awaited): void {
    this.waiting.push(message);
  }

  /** The message will get no reply after all (the server refused it). */
  drop(id: string): void {
    this.waiting = this.waiting.filter((m) => m.id !== id);
    this.changed();
  }

  /** A send answering `replyTo` arrived; anything else than one of ours changes nothing. */
  replied(replyTo: string): void {
    const i = this.waiting.findIndex((m) => m.id === replyTo);
    if (i < 0) return;
    const chat = this.waiting[i].chat;
    this.waiting = this.waiting.filter((m, j) => j > i || m.chat !== chat);
    this.changed();
  }

  /** Resolves once no message of `chat` waits for a reply, or after `timeoutMs`. */
  settled(chat: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.waiting.some((m) => m.chat === chat)) return;
        done();
      };
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  get missing(): readonly Awaited[] {
    return this.waiting;
  }

  private changed(): void {
    for (const listener of [...this.listeners]) listener();
  }
}
