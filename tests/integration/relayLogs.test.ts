import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, postEvents, relayEvent } from '../helpers/relay.ts';
import { startLoggedServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const PHONE = '+15557770123';
const OTHER = '+15557770124';

describe('relay logs', () => {
  it('carry the event id as correlation id, mask phone numbers and never contain message text', async () => {
    const db = await createTestDatabase();
    const { server, lines } = await startLoggedServer(db.url);
    const relayToken = await token('relay-logs', { role: 'relay' });
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const secret = 'my secret diary entry about pineapples';
    const e = relayEvent({ sender: PHONE, text: secret });
    await postEvents(server.url, relayToken, e);
    await relay.waitForSend((s) => s.replyTo === e.id);
    await api(server.url, 'GET', `/v1/conversations/${encodeURIComponent(`user_${PHONE}_persona_sage`)}/messages`, {
      token: await token(PHONE),
    });
    await relay.close();
    await expect.poll(() => lines.some((l) => l.includes('/v1/conversations/'))).toBe(true);
    const processed = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'message processed');
    expect(processed.map((l) => l.reqId)).toContain(e.id);
    const all = lines.join('\n');
    expect(all).not.toContain(PHONE);
    expect(all).not.toContain(PHONE.slice(1));
    expect(all).not.toContain('pineapples');
  });

  it('name each event on the lines of its own work: its moderation and its processing', async () => {
    const db = await createTestDatabase();
    const { server, lines } = await startLoggedServer(db.url);
    const relayToken = await token('relay-logs-batch', { role: 'relay' });
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const calm = relayEvent({ sender: OTHER, text: 'what a lovely morning' });
    const threat = relayEvent({ sender: OTHER, text: 'i know where you live' });
    expect((await postEvents(server.url, relayToken, { events: [calm, threat] })).status).toBe(202);
    await relay.waitForSend((s) => s.replyTo === threat.id);
    await relay.close();
    const parsed = () => lines.map((l) => JSON.parse(l));
    await expect
      .poll(() =>
        parsed()
          .filter((l) => l.msg === 'message processed')
          .map((l) => l.reqId),
      )
      .toEqual(expect.arrayContaining([calm.id, threat.id]));
    const flagged = parsed().filter((l) => l.msg === 'moderation flagged a text');
    expect(flagged).toEqual([expect.objectContaining({ reqId: threat.id, categories: ['harassment/threatening'] })]);
    expect(lines.join('\n')).not.toContain('where you live');
  });
});
