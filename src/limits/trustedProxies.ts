/**
 * Which address a request came from when it passed through proxies of our own
 * (`TRUSTED_PROXIES`). Behind a TLS proxy every connection comes from the proxy: without this,
 * every limit kept per client address would be one budget shared by all clients.
 *
 * The rule (the same as nginx's `real_ip_recursive on`): a connection from a trusted proxy
 * names its client in `X-Forwarded-For`, each proxy appending the address it saw. Read from
 * the right, skipping trusted proxies; the first address that is not one is the client. What
 * lies left of it was written by the client itself and is never believed. A connection from
 * anywhere else is its own client, whatever headers it sends.
 */
import { BlockList, isIP } from 'node:net';

/** Entries of `X-Forwarded-For` read at most: a longer chain is cut to its right end. */
const MAX_HOPS = 32;

export class TrustedProxies {
  private readonly list = new BlockList();

  /** `entries`: addresses or CIDR ranges (`10.0.0.0/8`, `fd00::/8`); throws naming a bad one. */
  constructor(readonly entries: readonly string[]) {
    for (const entry of entries) {
      const [address, bits, extra] = entry.split('/');
      const family = isIP(address);
      const max = family === 4 ? 32 : 128;
      const prefix = bits === undefined ? max : Number(bits);
      if (!family || extra !== undefined || !/^\d*$/.test(bits ?? '') || !(prefix >= 0 && prefix <= max)) {
        throw new Error(`"${entry}" is not an IP address or a CIDR range (e.g. 10.0.0.0/8, fd00::/8)`);
      }
      this.list.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
    }
  }

  /** True when `address` (IPv4, or IPv6 in any spelling, IPv4-mapped included) is trusted. */
  has(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }

  /** The client of a connection from `peer` that carried `forwardedFor` (the header, or undefined). */
  clientAddress(peer: string, forwardedFor: string | undefined): string {
    if (!forwardedFor || !this.has(peer)) return peer;
    const hops = forwardedFor.split(',').slice(-MAX_HOPS);
    let client = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const address = hopAddress(hops[i]);
      // A hop no proxy of ours could have written: the chain cannot be read past it.
      if (!address) break;
      client = address;
      if (!this.has(address)) break;
    }
    return client;
  }
}

/** One `X-Forwarded-For` entry as an address (`1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`). */
function hopAddress(hop: string): string | undefined {
  const text = hop.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(text);
  const v4WithPort = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(text);
  const address = bracketed?.[1] ?? v4WithPort?.[1] ?? text;
  return isIP(address) ? address : undefined;
}

/** The trusted proxies of `TRUSTED_PROXIES`, or null when none are (every peer is its own client). */
export function trustedProxiesOf(entries: readonly string[]): TrustedProxies | null {
  return entries.length ? new TrustedProxies(entries) : null;
}
