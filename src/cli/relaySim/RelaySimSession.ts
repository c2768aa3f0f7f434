/**
 * What the person at the simulator is doing: who they type as, in which chat, and what Sage
 * last said in each chat. Turns each typed line into a relay event (or a change of chat),
 * shows the server's answer to it, and shows Sage's replies as they arrive.
 */
import { randomBytes } from 'node:crypto';
import { shouldReply } from '../../../actors/conversationRules.ts';
import { parseLine } from './parseLine.ts';
import type { Answer, SendFrame } from './RelayConnection.ts';
import type { ReplyTracker } from './ReplyTracker.ts';
import { readPhoto } from './readPhoto.ts';
import type { Transcript } from './Transcript.ts';

type Chat = { kind: 'direct' } | { kind: 'group'; name: string; participants: string[] };

interface Outgoing {
  text?: string;
  photo?: { name: string; mime: string; data: string };
  replyTo?: string;
}

export interface RelaySimSessionOptions {
  as: string;
  persona: string;
  /** True when a person types at a terminal; false for lines piped in. */
  interactive: boolean;
  submit: (event: { id: string }) => Promise<Answer>;
  connected: () => boolean;
  transcript: Transcript;
  tracker: ReplyTracker;
  /** With lines piped in, how long `/reply` waits for the replies still due in its chat. */
  replyWaitMs: number;
  /** Lists the commands (for `/help`). */
  help: string;
}

const GROUP_PREFIX = 'iMessage;+;';
const DIRECT_PREFIX = 'iMessage;-;';

export class RelaySimSession {
  private as: string;
  private chat: Chat = { kind: 'direct' };
  /** Chat guid → id of Sage's last send there (what `/reply` answers). */
  private readonly lastSend = new Map<string, string>();
  private readonly name: string;
  /** Lines that failed (refused, bad command, unreadable photo): a script then exits 1. */
  failures = 0;
  quit = false;
  /** Called on every answer and every reply (the script mode's watchdog). */
  onProgress: (() => void) | null = null;

  constructor(private readonly o: RelaySimSessionOptions) {
    this.as = o.as;
    this.name = o.persona[0].toUpperCase() + o.persona.slice(1);
  }

  /** The prompt, which reads like the transcript line the typed text completes. */
  prompt(): string {
    const p = this.o.transcript.p;
    return `${p.label(`[${this.label()}]`)} ${p.you(`you (${this.as})`)}: `;
  }

  /** What the person is in now, for the banner. */
  describe(): string {
    return this.chat.kind === 'direct'
      ? `you are ${this.as}, in a direct chat with ${this.name} (${DIRECT_PREFIX}${this.as})`
      : `you are ${this.as}, in the group chat ${GROUP_PREFIX}${this.chat.name}; ${this.name} answers there when named ("${this.name}, …") or replied to`;
  }

  async handle(line: string): Promise<void> {
    const cmd = parseLine(line);
    switch (cmd.kind) {
      case 'empty':
        return;
      case 'invalid':
        return this.problem(cmd.message);
      case 'help':
        return this.o.transcript.print(this.o.help);
      case 'quit':
        this.quit = true;
        return;
      case 'as':
        this.as = cmd.phone;
        return this.notice(this.describe());
      case 'direct':
        this.chat = { kind: 'direct' };
        return this.notice(this.describe());
      case 'group':
        this.chat = { kind: 'group', name: cmd.name, participants: cmd.participants };
        return this.notice(this.describe());
      case 'photo': {
        let photo: Outgoing['photo'];
        try {
          photo = await readPhoto(cmd.path);
        } catch (err) {
          return this.problem((err as Error).message);
        }
        return this.send({ photo, text: cmd.caption }, false);
      }
      case 'reply': {
        // Lines piped in come faster than replies: answer the reply that is on its way.
        if (!this.o.interactive) await this.o.tracker.settled(this.guid(), this.o.replyWaitMs);
        const replyTo = this.lastSend.get(this.guid());
        if (!replyTo)
          return this.problem(`${this.name} has not written in this chat yet: there is nothing to reply to`);
        return this.send({ text: cmd.text, replyTo }, false);
      }
      case 'message':
        return this.send({ text: cmd.text }, true);
    }
  }

  /** A reply of Sage's (each send id once). */
  onSend(frame: SendFrame): void {
    this.lastSend.set(frame.chat.guid, frame.id);
    this.o.tracker.replied(frame.replyTo);
    const p = this.o.transcript.p;
    const label = this.labelOf(frame.chat.guid, frame.chat.group, frame.to);
    // Continuation lines are indented, so each reply starts exactly one "… Sage: " line.
    this.o.transcript.print(
      `${p.label(`[${label}]`)} ${p.sage(`${this.name}:`)} ${frame.text.replace(/\n/g, '\n    ')}`,
    );
    this.onProgress?.();
  }

  /**
   * Sends one message as a relay event and shows the answer: a mark on the typed line when
   * the typed line is the message itself (`typed`), else the message as a transcript line.
   */
  private async send(m: Outgoing, typed: boolean): Promise<void> {
    const { transcript: t, tracker } = this.o;
    const p = t.p;
    const guid = this.guid();
    const group = this.chat.kind === 'group';
    const participants = this.chat.kind === 'group' ? this.chat.participants : [];
    const id = `sim_${randomBytes(9).toString('base64url')}`;
    const event = {
      id,
      type: 'message',
      chat: { guid, group, ...(participants.length ? { participants: [...new Set([this.as, ...participants])] } : {}) },
      sender: this.as,
      persona: this.o.persona,
      ...(m.text ? { text: m.text } : {}),
      ...(m.photo ? { attachments: [{ id: `att_${id.slice(4)}`, ...m.photo }] } : {}),
      ...(m.replyTo ? { replyTo: m.replyTo } : {}),
      sentAt: new Date().toISOString(),
    };
    const what = [m.replyTo ? `(reply to ${this.name})` : '', m.photo ? `[photo ${m.photo.name}]` : '', m.text ?? '']
      .filter(Boolean)
      .join(' ');
    const line = `${p.label(`[${this.label()}]`)} ${p.you(`you (${this.as})`)}: ${what}`;
    // The server's own rule; a `replyTo` here is always the id of one of Sage's sends.
    const kind = group ? 'group' : 'direct';
    const ourMessageIds = m.replyTo ? [m.replyTo] : [];
    if (shouldReply({ kind, persona: this.o.persona, text: m.text, replyTo: m.replyTo, ourMessageIds })) {
      tracker.expect({ id, chat: guid, text: what });
    }
    if (this.o.interactive && !this.o.connected()) {
      t.print(p.dim('  … not connected: it goes out once the server is back'));
    }

    const answer = await this.o.submit(event);
    if (answer.type === 'error') {
      tracker.drop(id);
      this.failures++;
      // `closed`: the connection gave up (and said why) or the simulator is leaving.
      if (answer.code !== 'closed') {
        if (!this.o.interactive) t.print(`${line} (refused)`);
        t.print(p.error(`  ✗ refused: ${answer.code}: ${answer.message}`), true);
      }
    } else if (!this.o.interactive) {
      t.print(`${line} (${answer.type})`);
    } else {
      const mark = answer.type === 'accepted' ? p.dim(' ✓') : p.warn(' ↺ duplicate');
      if (typed) t.mark(mark, `${line}${mark}`);
      else t.print(`${line}${mark}`);
    }
    this.onProgress?.();
  }

  private guid(): string {
    return this.chat.kind === 'direct' ? `${DIRECT_PREFIX}${this.as}` : `${GROUP_PREFIX}${this.chat.name}`;
  }

  private label(): string {
    return this.chat.kind === 'direct' ? 'direct' : `group ${this.chat.name}`;
  }

  private labelOf(guid: string, group: boolean, to?: string): string {
    if (group) return `group ${guid.startsWith(GROUP_PREFIX) ? guid.slice(GROUP_PREFIX.length) : guid}`;
    const phone = to ?? guid.slice(DIRECT_PREFIX.length);
    return phone === this.as ? 'direct' : `direct ${phone}`;
  }

  private notice(text: string): void {
    this.o.transcript.print(this.o.transcript.p.dim(`  ${text}`), true);
  }

  private problem(text: string): void {
    this.failures++;
    this.o.transcript.print(this.o.transcript.p.error(`  ✗ ${text}`), true);
  }
}
