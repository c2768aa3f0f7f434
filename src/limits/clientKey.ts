/**
 * What a client is limited by: an IPv4 address itself, an IPv6 address its /64. A home or a
 * mobile subscriber is given a /64 (or more), so a limit per full IPv6 address is evaded by
 * changing the last 64 bits. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack
 * socket reports IPv4 clients) are their IPv4 address.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** How uWS spells an IPv4 client of a dual-stack socket: eight full groups, the last two the address. */
const MAPPED_FULL = '0000:0000:0000:0000:0000:ffff:';

export function clientKey(address: string): string {
  // Every request asks: the common case (an IPv4 client) without parsing.
  if (address.length === MAPPED_FULL.length + 9 && address.startsWith(MAPPED_FULL)) {
    const hi = Number.parseInt(address.slice(MAPPED_FULL.length, MAPPED_FULL.length + 4), 16);
    const lo = Number.parseInt(address.slice(MAPPED_FULL.length + 5), 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  const plain = address.replace(/%.*$/, '');
  if (isIPv4(plain)) return plain;
  const groups = ipv6Groups(plain);
  if (!groups) return address;
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return [groups[6] >> 8, groups[6] & 255, groups[7] >> 8, groups[7] & 255].join('.');
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address in any of its spellings; null when it is not one. */
function ipv6Groups(address: string): number[] | null {
  if (!isIPv6(address)) return null;
  let text = address;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const split = (s: string) => (s ? s.split(':') : []);
  const groups =
    tail === undefined
      ? split(head)
      : [...split(head), ...Array(8 - split(head).length - split(tail).length).fill('0'), ...split(tail)];
  return groups.map((g) => Number.parseInt(g, 16));
}

/**
 * `clientKey` of an address in binary (4 or 16 bytes, as uWebSockets.js' `getRemoteAddress`
 * gives it): the same key, without formatting the address as text and parsing it back.
 */
export function clientKeyOfBytes(address: ArrayBuffer): string {
  const b = new Uint8Array(address);
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) return '';
  let mapped = b[10] === 0xff && b[11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) mapped = b[i] === 0;
  if (mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const group = (i: number) => ((b[i] << 8) | b[i + 1]).toString(16);
  return `${group(0)}:${group(2)}:${group(4)}:${group(6)}::/64`;
}
