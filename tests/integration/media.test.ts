/**
 * Attachments sent by URL (README "RELAY_MEDIA_HOSTS", `MAX_ATTACHMENT_BYTES`): fetched only
 * over https from the listed hosts, without following redirects, and cut off past the size
 * limit. A local https media host (self-signed certificate in tests/fixtures, trusted by the
 * spawned server through NODE_EXTRA_CA_CERTS) counts every request it gets.
 */

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PermanentError } from '../../src/brain/resilience.ts';
import { Codes } from '../../src/errors.ts';
import { createMediaFetcher } from '../../src/relay/fetchMedia.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { type FakeOpenAI, isImageRequest, openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, postEvents, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { baseEnv, repoRoot, type SpawnedServer, spawnServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15559200001';
const MAX_ATTACHMENT_BYTES = 1000;
const PHOTO_BYTES = Buffer.from('a small png, well under the limit');
const COULD_NOT_LOOK = 'a photo I could not look at';
const fixture = (name: string) => path.join(repoRoot, 'tests/fixtures', name);

interface MediaHost {
  base: string;
  /** Requests received, by path. */
  hits: Map<string, number>;
  count(path: string): number;
  /** Paths whose response was cut off by the client before it was complete. */
  cutOff: Set<string>;
}

/** Serves `handler` and counts requests by path; closed after the file's tests. */
async function listen(
  server: http.Server | https.Server,
  scheme: 'http' | 'https',
): Promise<Omit<MediaHost, 'cutOff'> & { server: http.Server | https.Server }> {
  const hits = new Map<string, number>();
  server.on('request', (req: http.IncomingMessage) => hits.set(req.url ?? '', (hits.get(req.url ?? '') ?? 0) + 1));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  onCleanup(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return {
    server,
    base: `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    count: (p) => hits.get(p) ?? 0,
  };
}

async function startMediaHost(): Promise<MediaHost> {
  const cutOff = new Set<string>();
  const server = https.createServer(
    { key: readFileSync(fixture('media-tls.key.pem')), cert: readFileSync(fixture('media-tls.cert.pem')) },
    (req, res) => {
      const url = req.url ?? '';
      if (url.startsWith('/photo')) {
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': PHOTO_BYTES.length });
        res.end(PHOTO_BYTES);
      } else if (url.startsWith('/redirect')) {
        res.writeHead(302, { location: '/photo-via-redirect.png' });
        res.end();
      } else if (url.startsWith('/announced-too-large')) {
        const body = Buffer.alloc(MAX_ATTACHMENT_BYTES + 1, 1);
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': body.length });
        res.end(body);
      } else if (url.startsWith('/endless')) {
        // No Content-Length: a chunked body that goes on until the client hangs up (or 10 MB).
        res.writeHead(200, { 'content-type': 'image/png' });
        let sent = 0;
        const timer = setInterval(() => {
          if (sent >= 10_000_000) {
            clearInterval(timer);
            res.end();
            return;
          }
          res.write(Buffer.alloc(500, 2));
          sent += 500;
        }, 2);
        res.on('close', () => {
          clearInterval(timer);
          if (!res.writableFinished) cutOff.add(url);
        });
      } else {
        res.writeHead(404).end();
      }
    },
  );
  return { ...(await listen(server, 'https')), cutOff };
}

describe('attachments fetched by URL', () => {
  let db: TestDatabase;
  let fake: FakeOpenAI;
  let media: MediaHost;
  let server: SpawnedServer;
  let relayToken: string;
  let relay: RelayClient;

  beforeAll(async () => {
    [db, fake, media] = await Promise.all([
      createTestDatabase(),
      startFakeOpenAI({ describe: 'a tram on a steep street' }),
      startMediaHost(),
    ]);
    server = await spawnServer(
      baseEnv(
        db.url,
        openAIEnv(fake, {
          RELAY_MEDIA_HOSTS: '127.0.0.1',
          MAX_ATTACHMENT_BYTES: String(MAX_ATTACHMENT_BYTES),
          MODEL_BREAKER_FAILURES: '2',
          MODEL_BREAKER_HALF_OPEN_MS: '60000',
          SENDER_BURST: '100',
          NODE_EXTRA_CA_CERTS: fixture('media-tls.cert.pem'),
        }),
      ),
    );
    relayToken = await token('relay-media', { role: 'relay' });
    relay = await connectRelay(server.url, relayToken, { autoAck: true });
  });

  /** Sends a photo by URL; resolves with the stored description of it once the reply arrived. */
  async function sendPhoto(url: string): Promise<string> {
    const e = relayEvent({ sender: ALICE, attachments: [{ id: 'u1', mime: 'image/png', url }] });
    expect((await postEvents(server.url, relayToken, e)).status).toBe(202);
    await relay.waitForSend((s) => s.replyTo === e.id);
    const row = await db.pool.query('SELECT attachments FROM messages WHERE id = $1', [`in_${e.id}`]);
    return row.rows[0].attachments[0].description;
  }
  const images = () => fake.chats.filter(isImageRequest).length;

  it('fetches an https photo from a RELAY_MEDIA_HOSTS host once and shows it to the vision model', async () => {
    const before = images();
    expect(await sendPhoto(`${media.base}/photo.png`)).toBe('a tram on a steep street');
    expect(media.count('/photo.png')).toBe(1);
    expect(images()).toBe(before + 1);
    const seen = fake.chats.filter(isImageRequest).at(-1);
    expect(JSON.stringify(seen)).toContain(`data:image/png;base64,${PHOTO_BYTES.toString('base64')}`);
  });

  it('refuses an http attachment URL with 400 validation_failed naming the url, and fetches nothing', async () => {
    const plain = await listen(
      http.createServer((_req, res) => res.end(PHOTO_BYTES)),
      'http',
    );
    const e = relayEvent({
      sender: ALICE,
      attachments: [{ id: 'u1', mime: 'image/png', url: `${plain.base}/photo.png` }],
    });
    const res = await postEvents(server.url, relayToken, e);
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path: ['attachments', 0, 'url'] });
    const stored = await db.pool.query('SELECT count(*) FROM relay_inbox WHERE event_id = $1', [e.id]);
    expect(stored.rows[0].count).toBe('0');
    expect(plain.hits.size).toBe(0);
  });

  it('refuses an attachment URL on a host not in RELAY_MEDIA_HOSTS with 400 validation_failed, and fetches nothing', async () => {
    const url = `${media.base.replace('127.0.0.1', 'localhost')}/photo-elsewhere.png`;
    const e = relayEvent({ sender: ALICE, attachments: [{ id: 'u1', mime: 'image/png', url }] });
    const res = await postEvents(server.url, relayToken, e);
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path: ['attachments', 0, 'url'] });
    expect(media.count('/photo-elsewhere.png')).toBe(0);
  });

  it('does not follow a redirect: the photo is one Sage could not look at, asked for once, its target never fetched', async () => {
    const before = images();
    expect(await sendPhoto(`${media.base}/redirect-1`)).toBe(COULD_NOT_LOOK);
    expect(media.count('/redirect-1')).toBe(1);
    expect(media.count('/photo-via-redirect.png')).toBe(0);
    expect(images()).toBe(before);
  });

  it('refuses a body whose Content-Length is over MAX_ATTACHMENT_BYTES, asking once and showing the model nothing', async () => {
    const before = images();
    expect(await sendPhoto(`${media.base}/announced-too-large.png`)).toBe(COULD_NOT_LOOK);
    expect(media.count('/announced-too-large.png')).toBe(1);
    expect(images()).toBe(before);
  });

  it('cuts a chunked body off once it passes MAX_ATTACHMENT_BYTES', async () => {
    const before = images();
    expect(await sendPhoto(`${media.base}/endless.png`)).toBe(COULD_NOT_LOOK);
    await expect.poll(() => media.cutOff.has('/endless.png')).toBe(true);
    expect(media.count('/endless.png')).toBe(1);
    expect(images()).toBe(before);
  });

  it('keeps fetching photos after MODEL_BREAKER_FAILURES refused attachments: refusals do not open the media breaker', async () => {
    expect(await sendPhoto(`${media.base}/redirect-2`)).toBe(COULD_NOT_LOOK);
    expect(await sendPhoto(`${media.base}/redirect-3`)).toBe(COULD_NOT_LOOK);
    expect(await sendPhoto(`${media.base}/photo-after-refusals.png`)).toBe('a tram on a steep street');
    expect(media.count('/photo-after-refusals.png')).toBe(1);
    const metrics = await api(server.url, 'GET', '/metrics');
    expect(metrics.body).toMatch(/archety_circuit_breaker_state\{dependency="media"\} 0/);
  });
});

describe('the media fetcher itself (checked again after ingest)', () => {
  it('refuses http URLs and hosts not in its list before sending any request', async () => {
    const plain = await listen(
      http.createServer((_req, res) => res.end(PHOTO_BYTES)),
      'http',
    );
    const fetchMedia = createMediaFetcher(['127.0.0.1'], MAX_ATTACHMENT_BYTES);
    const signal = new AbortController().signal;
    await expect(fetchMedia(`${plain.base}/photo.png`, signal)).rejects.toBeInstanceOf(PermanentError);
    await expect(
      fetchMedia(`${plain.base.replace('http:', 'https:').replace('127.0.0.1', 'localhost')}/photo.png`, signal),
    ).rejects.toBeInstanceOf(PermanentError);
    expect(plain.hits.size).toBe(0);
  });
});
