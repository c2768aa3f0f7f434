import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configVariables } from '../../src/config.ts';
import { errorCatalog } from '../../src/errors.ts';
import { repoRoot } from '../helpers/server.ts';

const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
const section = (title: string) => {
  const start = readme.indexOf(`## ${title}`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
};

describe('the README', () => {
  it('documents every error code with its HTTP status in the errors table', () => {
    const errors = section('Errors');
    for (const [code, spec] of Object.entries(errorCatalog)) {
      expect(errors, code).toMatch(new RegExp(`\\| \`${code}\` \\| ${spec.status} \\|`));
    }
  });

  it('documents every configuration variable in the configuration table', () => {
    const config = section('Configuration');
    for (const name of configVariables) expect(config, name).toContain(`| \`${name}\` |`);
  });

  it('gives npm test as the way to run the tests', () => {
    expect(readme).toContain('npm test');
  });
});
