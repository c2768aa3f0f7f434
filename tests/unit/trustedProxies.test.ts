/**
 * TRUSTED_PROXIES: a connection from one of our proxies is keyed by the client its
 * `X-Forwarded-For` names (read from the right, skipping our proxies); whatever a client writes
 * into the header itself, it never changes the address it is limited by.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TrustedProxies, trustedProxiesOf } from '../../src/limits/trustedProxies.ts';

const proxies = new TrustedProxies(['127.0.0.1', '10.0.0.0/8', 'fd00::/8']);

describe('TrustedProxies', () => {
  it('matches addresses and ranges in every spelling uWebSockets.js or a header uses', () => {
    expect(proxies.has('127.0.0.1')).toBe(true);
    expect(proxies.has('127.0.0.2')).toBe(false);
    expect(proxies.has('10.200.3.4')).toBe(true);
    expect(proxies.has('11.0.0.1')).toBe(false);
    // A dual-stack socket's IPv4 client, as uWebSockets.js spells it.
    expect(proxies.has('0000:0000:0000:0000:0000:ffff:7f00:0001')).toBe(true);
    expect(proxies.has('::ffff:10.1.1.1')).toBe(true);
    expect(proxies.has('fd12:3456::1')).toBe(true);
    expect(proxies.has('fe80::1')).toBe(false);
    expect(proxies.has('not an address')).toBe(false);
  });

  it('believes X-Forwarded-For only from a trusted peer, and only up to the first untrusted hop', () => {
    expect(proxies.clientAddress('203.0.113.9', '198.51.100.1')).toBe('203.0.113.9');
    expect(proxies.clientAddress('127.0.0.1', undefined)).toBe('127.0.0.1');
    expect(proxies.clientAddress('127.0.0.1', '198.51.100.1')).toBe('198.51.100.1');
    // Two proxies of ours: the load balancer appended the client, nginx the load balancer.
    expect(proxies.clientAddress('127.0.0.1', '198.51.100.1, 10.0.0.5')).toBe('198.51.100.1');
    // What the client wrote itself (left of what our proxy appended) is ignored.
    expect(proxies.clientAddress('127.0.0.1', '1.1.1.1, 2.2.2.2, 198.51.100.1')).toBe('198.51.100.1');
    expect(proxies.clientAddress('127.0.0.1', '[2001:db8::7]:443')).toBe('2001:db8::7');
    expect(proxies.clientAddress('127.0.0.1', '198.51.100.1:5678')).toBe('198.51.100.1');
  });

  it('stops at a hop no proxy could have written, keyed by the last proxy it could read', () => {
    expect(proxies.clientAddress('127.0.0.1', 'garbage')).toBe('127.0.0.1');
    expect(proxies.clientAddress('127.0.0.1', 'garbage, 10.0.0.5')).toBe('10.0.0.5');
    // Every hop ours: the leftmost one is as far as anyone can know.
    expect(proxies.clientAddress('127.0.0.1', '10.0.0.7, 10.0.0.5')).toBe('10.0.0.7');
  });

  it('refuses an entry that is not an address or a range, naming it', () => {
    expect(() => new TrustedProxies(['10.0.0.0/8', 'proxy'])).toThrow(/"proxy" is not an IP address/);
    expect(() => new TrustedProxies(['10.0.0.0/40'])).toThrow(/"10.0.0.0\/40"/);
    expect(trustedProxiesOf([])).toBeNull();
  });

  it('property: no header a client writes changes the address it is keyed by', () => {
    const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join('.'));
    const untrusted = ipv4.filter((a) => !proxies.has(a));
    const ours = fc.constantFrom('127.0.0.1', '10.0.0.5', '10.9.8.7', 'fd00::1');
    const junk = fc.oneof(ipv4, fc.string({ maxLength: 20 }), fc.constant('unknown'));
    fc.assert(
      fc.property(
        untrusted,
        fc.array(junk, { maxLength: 50 }),
        fc.array(ours, { maxLength: 3 }),
        ours,
        (client, spoofed, chain, peer) => {
          // The client sent `spoofed`; our first proxy appended the client; the others each
          // appended the proxy before them.
          const header = [...spoofed, client, ...chain].join(', ');
          expect(proxies.clientAddress(peer, header)).toBe(client);
          // And an untrusted peer is its own client, whatever it sends.
          expect(proxies.clientAddress(client, header)).toBe(client);
        },
      ),
    );
  });
});
