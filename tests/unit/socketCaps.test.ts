/**
 * The in-process socket caps (single-node mode): at most `max` sockets per key, all caps of a
 * socket counted or none, a release frees a slot, and concurrent admissions cannot slip past.
 */
import { describe, expect, it } from 'vitest';
import { createLocalSocketCaps } from '../../src/limits/socketCaps.ts';

const user = (max: number) => ({ key: 'u:alice', max });
const session = (max: number) => ({ key: 's:trip', max });

describe('local socket caps', () => {
  it('admits up to max sockets per key and answers the full cap for the next', async () => {
    const caps = createLocalSocketCaps();
    for (let i = 0; i < 3; i++) expect(await caps.admit([user(3)])).toBeNull();
    expect(await caps.admit([user(3)])).toEqual(user(3));
    expect(await caps.admit([{ key: 'u:bob', max: 3 }])).toBeNull();
  });

  it('frees a slot when a socket is released', async () => {
    const caps = createLocalSocketCaps();
    await caps.admit([user(1)]);
    expect(await caps.admit([user(1)])).not.toBeNull();
    caps.release([user(1).key]);
    expect(await caps.admit([user(1)])).toBeNull();
  });

  it('counts nothing when one of the caps is full', async () => {
    const caps = createLocalSocketCaps();
    expect(await caps.admit([user(5), session(1)])).toBeNull();
    expect(await caps.admit([user(5), session(1)])).toEqual(session(1));
    // Four more fit under the user's cap of 5: the refused admission took no slot of it.
    for (let i = 0; i < 4; i++) expect(await caps.admit([user(5)])).toBeNull();
    expect(await caps.admit([user(5)])).toEqual(user(5));
  });

  it('admits exactly max of many concurrent admissions', async () => {
    const caps = createLocalSocketCaps();
    const answers = await Promise.all(Array.from({ length: 20 }, () => caps.admit([session(7)])));
    expect(answers.filter((full) => full === null)).toHaveLength(7);
  });

  it('admits a socket with no caps', async () => {
    expect(await createLocalSocketCaps().admit([])).toBeNull();
  });

  it('forgets a key whose sockets all closed, and a release of an unknown key changes nothing', async () => {
    const caps = createLocalSocketCaps();
    await caps.admit([user(2)]);
    caps.release([user(2).key]);
    caps.release([user(2).key]);
    expect(await caps.admit([user(2)])).toBeNull();
    expect(await caps.admit([user(2)])).toBeNull();
    expect(await caps.admit([user(2)])).toEqual(user(2));
  });
});
