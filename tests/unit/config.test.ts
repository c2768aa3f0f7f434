import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';

describe('the configuration', () => {
  it('runs one group-commit lane unless told otherwise', () => {
    expect(loadConfig({}).groupCommit.lanes).toBe(1);
    expect(loadConfig({ PG_POOL_MAX: '20', GROUP_COMMIT_LANES: '4' }).groupCommit.lanes).toBe(4);
  });

  it('refuses as many group-commit lanes as pool connections, naming the variable', () => {
    expect(() => loadConfig({ PG_POOL_MAX: '4', GROUP_COMMIT_LANES: '4' })).toThrow(ConfigError);
    expect(() => loadConfig({ PG_POOL_MAX: '4', GROUP_COMMIT_LANES: '4' })).toThrow(/GROUP_COMMIT_LANES=4/);
    expect(() => loadConfig({ GROUP_COMMIT_LANES: '0' })).toThrow(/GROUP_COMMIT_LANES/);
    expect(() => loadConfig({ PG_POOL_MAX: '1' })).toThrow(/GROUP_COMMIT_LANES=1 must be below PG_POOL_MAX/);
  });

  it('names the variable of a value that is not a number', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/invalid configuration: PORT="eighty"/);
  });
});
