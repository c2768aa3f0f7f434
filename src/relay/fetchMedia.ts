/**
 * Fetches an attachment by URL: only https, only hosts in RELAY_MEDIA_HOSTS (checked again
 * here, not only at ingest), no redirects (they could lead anywhere), at most
 * MAX_ATTACHMENT_BYTES.
 */
export function createMediaFetcher(hosts: readonly string[], maxBytes: number) {
  return async (url: string, signal: AbortSignal): Promise<Buffer> => {
    const u = new URL(url);
    if (u.protocol !== 'https:' || !hosts.includes(u.hostname))
      throw new Error(`media host ${u.hostname} is not allowed`);
    const res = await fetch(u, { signal, redirect: 'error' });
    if (!res.ok) throw new Error(`media fetch answered ${res.status}`);
    if (Number(res.headers.get('content-length') ?? 0) > maxBytes) throw new Error('the attachment is too large');
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size > maxBytes) throw new Error('the attachment is too large');
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  };
}
