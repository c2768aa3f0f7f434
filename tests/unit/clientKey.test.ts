/**
 * The key per-address limits use: IPv4 addresses as they are, IPv4-mapped IPv6 as IPv4, and
 * IPv6 by their /64 whatever the spelling (uWS reports every address in full, eight groups).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientKey, clientKeyOfBytes } from '../../src/limits/clientKey.ts';

const group = fc.integer({ min: 0, max: 0xffff });
const ipv6 = fc.array(group, { minLength: 8, maxLength: 8 });
/** uWS's spelling: eight groups of four hex digits. */
const full = (g: number[]) => g.map((x) => x.toString(16).padStart(4, '0')).join(':');
/** The shortest spelling (RFC 5952), as the URL parser writes it. */
const short = (g: number[]) => new URL(`http://[${full(g)}]/`).hostname.slice(1, -1);

describe('clientKey', () => {
  it('keeps an IPv4 address, also when a dual-stack socket reports it as IPv4-mapped IPv6', () => {
    expect(clientKey('203.0.113.7')).toBe('203.0.113.7');
    expect(clientKey('0000:0000:0000:0000:0000:ffff:7f00:0001')).toBe('127.0.0.1');
    expect(clientKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
  });

  it('gives every address of one IPv6 /64 one key, in any spelling', () => {
    fc.assert(
      fc.property(ipv6, fc.array(group, { minLength: 4, maxLength: 4 }), (g, rest) => {
        fc.pre(!(g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff));
        const key = clientKey(full(g));
        expect(key).toMatch(/::\/64$/);
        expect(clientKey(short(g))).toBe(key);
        expect(clientKey(full([...g.slice(0, 4), ...rest]))).toBe(key);
      }),
    );
  });

  it('gives addresses of different /64s different keys', () => {
    fc.assert(
      fc.property(ipv6, fc.integer({ min: 0, max: 3 }), group, (g, at, other) => {
        fc.pre(g[at] !== other);
        const changed = g.slice();
        changed[at] = other;
        expect(clientKey(full(changed))).not.toBe(clientKey(full(g)));
      }),
    );
  });

  it('spells loopback and a zone-scoped address by their /64', () => {
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });

  it('leaves what is not an address as it is', () => {
    expect(clientKey('unknown')).toBe('unknown');
  });
});

describe('clientKeyOfBytes', () => {
  const bytesOf = (g: number[]) => new Uint8Array(g.flatMap((x) => [x >> 8, x & 255])).buffer;

  it('gives the key clientKey gives the same address as text, IPv4, IPv4-mapped and IPv6', () => {
    const octets = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 });
    fc.assert(
      fc.property(octets, (o) => {
        expect(clientKeyOfBytes(new Uint8Array(o).buffer)).toBe(clientKey(o.join('.')));
        const mapped = [0, 0, 0, 0, 0, 0xffff, (o[0] << 8) | o[1], (o[2] << 8) | o[3]];
        expect(clientKeyOfBytes(bytesOf(mapped))).toBe(clientKey(full(mapped)));
      }),
    );
    fc.assert(
      fc.property(ipv6, (g) => {
        expect(clientKeyOfBytes(bytesOf(g))).toBe(clientKey(full(g)));
      }),
    );
    expect(clientKeyOfBytes(bytesOf([0, 0, 0, 0, 0, 0, 0, 1]))).toBe(clientKey('::1'));
  });

  it('gives an empty key for no address (as uWS reports a socket without a peer)', () => {
    expect(clientKeyOfBytes(new ArrayBuffer(0))).toBe('');
  });
});
