/**
 * Fetches an attachment by URL: only https, only hosts in RELAY_MEDIA_HOSTS (checked again
 * here, not only at ingest), no redirects (they could lead anywhere), at most
 * MAX_ATTACHMENT_BYTES. A refusal is a `PermanentError`: asking again would be refused again,
 * so it is not retried and does not count towards the media breaker (a few bad URLs must not
 * stop every photo sent by URL).
 */
import { PermanentError } from '../brain/resilience.ts';

export function createMediaFetcher(hosts: readonly string[], maxBytes: number) {
  return async (url: string, signal: AbortSignal): Promise<Buffer> => {
    const u = new URL(url);
    if (u.protocol !== 'https:' || !hosts.includes(u.hostname))
      throw new PermanentError(`media host ${u.hostname} is not allowed`);
    const res = await fetch(u, { signal, redirect: 'manual' });
    if (!res.ok) {
      await res.body?.cancel();
      if (res.status >= 300 && res.status < 400) throw new PermanentError('media redirects are not followed');
      const transient = res.status >= 500 || res.status === 408 || res.status === 429;
      throw new (transient ? Error : PermanentError)(`media fetch answered ${res.status}`);
    }
    if (Number(res.headers.get('content-length') ?? 0) > maxBytes) {
      await res.body?.cancel();
      throw new PermanentError('the attachment is too large');
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size > maxBytes) throw new PermanentError('the attachment is too large');
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  };
}
