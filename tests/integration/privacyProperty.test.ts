/**
 * Property: over random interleavings of direct and group messages among overlapping
 * people, no prompt sent to the model for one container ever contains anything said in
 * another — even when the question names another container's secrets, so full-text memory
 * search is tempted to find them. The question's own words are the only place such a name
 * may appear: it is taken out of the prompt before the check, so a memory pulled in by the
 * very question that names it is caught.
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.ts';
import { type FakeOpenAI, openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { connectRelay, postEvents, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

/** Four people; their numbers are fresh for every run, so each run's containers start empty. */
const person = (run: number, p: number) => `+1555${String(run).padStart(5, '0')}${p}`;
const GROUPS: Record<string, number[]> = { G1: [0, 1, 2], G2: [1, 2, 3], G3: [0, 3] };

let base: string;
let fake: FakeOpenAI;
let relay: RelayClient;
let relayToken: string;
let pool: Awaited<ReturnType<typeof createTestDatabase>>['pool'];
let run = 0;

beforeAll(async () => {
  const db = await createTestDatabase();
  pool = db.pool;
  // Replies that quote nothing: a marker in a prompt came from a statement, a memory or a question.
  fake = await startFakeOpenAI({ reply: () => 'Noted.' });
  const server = await startTestServer(
    db.url,
    openAIEnv(fake, { SENDER_MESSAGES_PER_MINUTE: '6000', SENDER_BURST: '1000' }),
  );
  base = server.url;
  relayToken = await token('relay-prop', { role: 'relay' });
  relay = await connectRelay(base, relayToken, { autoAck: true });
});

interface Step {
  person: number;
  /** 'direct' or a group name the person belongs to. */
  chat: string;
  question: boolean;
  /** Indexes (into the markers said so far) to name in a question. */
  mention: number[];
}

const step = fc
  .record({
    person: fc.integer({ min: 0, max: 3 }),
    chatPick: fc.integer({ min: 0, max: 3 }),
    question: fc.boolean(),
    mention: fc.array(fc.nat(30), { maxLength: 3 }),
  })
  .map(({ person, chatPick, question, mention }): Step => {
    const groups = Object.keys(GROUPS).filter((g) => GROUPS[g].includes(person));
    const chat = chatPick === 0 ? 'direct' : groups[chatPick % groups.length];
    return { person, chat, question, mention };
  });

const containerOf = (s: Step) => (s.chat === 'direct' ? `direct:${s.person}` : s.chat);
const MARKER = /zq\d+x\d+/g;

describe('privacy (property)', () => {
  it('never shows one container anything said in another', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 4, maxLength: 10 }), async (steps) => {
        const r = run++;
        const said: string[] = [];
        /** Markers stated in each container: the only ones its prompts may hold beyond its questions. */
        const stated = new Map<string, Set<string>>();
        /** Every question asked in each container, verbatim. */
        const questions = new Map<string, string[]>();
        for (const [i, s] of steps.entries()) {
          const c = containerOf(s);
          const mine = stated.get(c) ?? new Set<string>();
          stated.set(c, mine);
          const asked = questions.get(c) ?? [];
          questions.set(c, asked);
          const marker = `zq${r}x${i}`;
          const named = s.mention.map((m) => said[m % Math.max(1, said.length)]).filter(Boolean);
          const text = s.question
            ? `Sage, what do you remember about ${named.join(' and ') || 'anything'}? ask${r}q${i}`
            : `I love ${marker} very much.`;
          if (s.question) asked.push(text);
          else {
            said.push(marker);
            mine.add(marker);
          }
          const group = s.chat === 'direct' ? false : `prop-${r}-${s.chat}`;
          const e = relayEvent({
            sender: person(r, s.person),
            group,
            participants: group ? GROUPS[s.chat].map((p) => person(r, p)) : undefined,
            text,
          });
          expect((await postEvents(base, relayToken, e)).status).toBe(202);
          const replies = s.question || s.chat === 'direct';
          if (replies) await relay.waitForSend((x) => x.replyTo === e.id);
          else
            await expect
              .poll(async () => (await pool.query('SELECT 1 FROM messages WHERE id = $1', [`in_${e.id}`])).rowCount, {
                timeout: 10_000,
              })
              .toBe(1);
          if (s.question) {
            const prompt = fake.promptTexts().find((p) => p.endsWith(`ask${r}q${i}`));
            expect(prompt, 'the question reached the model').toBeDefined();
            let rest = prompt ?? '';
            for (const q of asked) rest = rest.split(q).join('');
            for (const m of rest.match(MARKER) ?? []) {
              expect(mine.has(m), `${m} (said elsewhere) appeared in a prompt for ${c}:\n${prompt}`).toBe(true);
            }
          }
        }
      }),
      { numRuns: 30 },
    );
  }, 180_000);

  it('is not vacuous: a container’s own memories do reach its prompts', async () => {
    const e1 = relayEvent({ sender: person(99_999, 0), text: 'I love zqownx1 very much.' });
    await postEvents(base, relayToken, e1);
    await relay.waitForSend((x) => x.replyTo === e1.id);
    const e2 = relayEvent({ sender: person(99_999, 0), text: 'What do you know about zqownx1? ownq' });
    await postEvents(base, relayToken, e2);
    await relay.waitForSend((x) => x.replyTo === e2.id);
    const prompt = fake.promptTexts().find((p) => p.endsWith('ownq')) as string;
    const system = prompt
      .split('\n')
      .filter((l) => l.startsWith('- '))
      .join('\n');
    expect(system).toContain('zqownx1');
  });
});
