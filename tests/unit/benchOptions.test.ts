/** `npm run bench:miniapp`'s options: what a careless flag does (bench/lib/options.ts). */
import { describe, expect, it } from 'vitest';
import { parseOptions } from '../../bench/lib/options.ts';

const parse = (...argv: string[]) => {
  const o = parseOptions(argv, {});
  if (o === 'help') throw new Error('unexpected help');
  return o;
};

describe('bench:miniapp options', () => {
  it('skips the many-quiet-sessions phase with --quiet-s 0, as with --quiet-rate 0', () => {
    expect(parse('--quiet-s', '0').quietRate).toBe(0);
    expect(parse('--quiet-rate', '0').quietRate).toBe(0);
    expect(parse().quietRate).toBeGreaterThan(0);
  });

  it('measures that phase for the seconds given', () => {
    const o = parse('--quiet-s', '5');
    expect(o.quietMeasureMs).toBe(5000);
    expect(o.quietRate).toBe(parse().quietRate);
  });

  it('refuses a negative or fractional number of seconds, naming the flag and the value', () => {
    expect(() => parse('--quiet-s=-1')).toThrow('--quiet-s must be an integer ≥ 0, got "-1"');
    expect(() => parse('--quiet-s', '1.5')).toThrow('--quiet-s must be an integer ≥ 0, got "1.5"');
  });
});
