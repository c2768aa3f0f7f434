/**
 * The documentation kept in step with the code: the README's tables, `docs/protocol.md`'s error
 * and close-code tables and `docs/operations.md`'s error table against `src/errors.ts`,
 * `actors/closeCodes.ts` and `src/config.ts`; and the repository documenting itself (no pointer
 * to files outside it, no relative link to a missing file).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CloseCodes } from '../../actors/closeCodes.ts';
import { configVariables } from '../../src/config.ts';
import { errorCatalog } from '../../src/errors.ts';
import { repoRoot } from '../helpers/server.ts';

const read = (file: string) => readFileSync(path.join(repoRoot, file), 'utf8');
const readme = read('README.md');
const protocol = read('docs/protocol.md');
const operations = read('docs/operations.md');

/** The `## title` section of a markdown document, up to the next `## ` heading; '' when there is none. */
function section(doc: string, title: string): string {
  const heading = new RegExp(`^## ${title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm').exec(doc);
  if (!heading) return '';
  const end = doc.indexOf('\n## ', heading.index + 1);
  return doc.slice(heading.index, end < 0 ? undefined : end);
}

/** The first cell of every body row of the markdown tables in `text`, backticks removed. */
function firstCells(text: string): string[] {
  const cells: string[] = [];
  let inTable = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith('|')) {
      inTable = false;
      continue;
    }
    const first = line.split('|')[1].trim();
    // A table's first line is its header, its second the `|---|` separator.
    if (!inTable) inTable = true;
    else if (!/^:?-+:?$/.test(first)) cells.push(first.replace(/`/g, ''));
  }
  return cells;
}

/** The anchors of a markdown document's headings, as GitHub makes them (code blocks skipped). */
function anchorsOf(doc: string): Set<string> {
  const anchors = new Set<string>();
  let fenced = false;
  for (const line of doc.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6} (.+)$/.exec(line);
    if (!heading) continue;
    const slug = heading[1]
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    let anchor = slug;
    for (let n = 1; anchors.has(anchor); n++) anchor = `${slug}-${n}`;
    anchors.add(anchor);
  }
  return anchors;
}

/** Every file under `dir` (relative to the repository), recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(path.join(repoRoot, dir), { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    return entry.isDirectory() ? filesUnder(file) : [file];
  });
}

describe('the README', () => {
  it('documents every error code with its HTTP status in the errors table', () => {
    const errors = section(readme, 'Errors');
    for (const [code, spec] of Object.entries(errorCatalog)) {
      expect(errors, code).toMatch(new RegExp(`\\| \`${code}\` \\| ${spec.status} \\|`));
    }
  });

  it('documents every configuration variable in the configuration table', () => {
    const config = section(readme, 'Configuration');
    for (const name of configVariables) expect(config, name).toContain(`| \`${name}\` |`);
  });

  it('gives npm test as the way to run the tests', () => {
    expect(readme).toContain('npm test');
  });

  it('links the reference documentation in docs/', () => {
    for (const page of ['docs/protocol.md', 'docs/architecture.md', 'docs/operations.md']) {
      expect(readme, page).toContain(`](${page})`);
    }
  });
});

/** Every code of src/errors.ts has a row `| \`code\` | status |` in `table`. */
function expectEveryErrorCode(table: string): void {
  for (const [code, spec] of Object.entries(errorCatalog)) {
    expect(table, code).toMatch(new RegExp(`^\\| \`${code}\` \\| ${spec.status} \\|`, 'm'));
  }
}

/** `table` names only codes src/errors.ts defines, each once. */
function expectOnlyKnownErrorCodes(table: string): void {
  const rows = firstCells(table);
  expect(rows.length).toBeGreaterThan(0);
  expect(rows.filter((code) => !Object.hasOwn(errorCatalog, code))).toEqual([]);
  expect(new Set(rows).size, 'each code once').toBe(rows.length);
}

describe('docs/protocol.md', () => {
  const errorTable = section(protocol, 'Error codes');
  const closeTable = section(protocol, 'Close codes');

  it('lists every error code of src/errors.ts with its HTTP status in its error-code table', () => {
    expectEveryErrorCode(errorTable);
  });

  it('names no error code that src/errors.ts does not define, each once', () => {
    expectOnlyKnownErrorCodes(errorTable);
  });

  it('lists every close code of actors/closeCodes.ts in its close-code table', () => {
    const rows = firstCells(closeTable);
    for (const [name, code] of Object.entries(CloseCodes)) expect(rows, name).toContain(String(code));
  });

  it('names no close code that actors/closeCodes.ts does not define', () => {
    const rows = firstCells(closeTable);
    const defined = new Set<string>(Object.values(CloseCodes).map(String));
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.filter((code) => !defined.has(code))).toEqual([]);
  });
});

describe('docs/operations.md', () => {
  const errorTable = section(operations, 'Error codes: what they mean and what to do');

  it('tells the operator what every error code of src/errors.ts means, with its HTTP status', () => {
    expectEveryErrorCode(errorTable);
  });

  it('names no error code that src/errors.ts does not define, each once', () => {
    expectOnlyKnownErrorCodes(errorTable);
  });
});

describe('the repository documents itself', () => {
  const documents = ['README.md', ...filesUnder('docs').filter((f) => f.endsWith('.md'))];

  it('points nowhere outside it: no ../shared, PROTOCOL.md, DESIGN.md, STYLE.md or BENCHMARKING.md in docs/, README.md or src/', () => {
    const outside = /\.\.\/shared|\b(?:PROTOCOL|DESIGN|STYLE|BENCHMARKING)\.md\b/;
    const found: string[] = [];
    for (const file of ['README.md', ...filesUnder('docs'), ...filesUnder('src')]) {
      read(file)
        .split('\n')
        .forEach((line, i) => {
          if (outside.test(line)) found.push(`${file}:${i + 1}: ${line.trim()}`);
        });
    }
    expect(found).toEqual([]);
  });

  it('has no relative link in README.md or docs/ to a file that does not exist', () => {
    const broken: string[] = [];
    for (const file of documents) {
      for (const [, target] of read(file).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/i.test(target) || target.startsWith('#')) continue;
        const resolved = path.join(path.dirname(file), target.split('#')[0]);
        if (!existsSync(path.join(repoRoot, resolved))) broken.push(`${file}: ${target}`);
      }
    }
    expect(documents).toContain('docs/operations.md');
    expect(broken).toEqual([]);
  });

  it('has no link in README.md or docs/ to a heading that does not exist', () => {
    const broken: string[] = [];
    for (const file of documents) {
      for (const [, target] of read(file).matchAll(/\]\(([^)\s]*#[^)\s]+)\)/g)) {
        if (/^[a-z]+:/i.test(target)) continue;
        const [page, anchor] = target.split('#');
        const linked = page ? path.join(path.dirname(file), page) : file;
        if (!anchorsOf(read(linked)).has(anchor)) broken.push(`${file}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('names only files that exist when docs/ gives a path in the repository or a source file name', () => {
    const sources = new Set([...filesUnder('src'), ...filesUnder('actors')].map((f) => path.basename(f)));
    const missing: string[] = [];
    for (const file of documents.filter((f) => f.startsWith('docs'))) {
      const text = read(file);
      for (const [, named] of text.matchAll(/`((?:src|actors|sql|tests|bin|bench)\/[^`\s]+)`/g)) {
        if (/[*]|NNN/.test(named)) continue; // a pattern, not a file
        if (!existsSync(path.join(repoRoot, named))) missing.push(`${file}: ${named}`);
      }
      // A bare name (`carefulWrite.ts`) is a file somewhere under src/ or actors/.
      for (const [, named] of text.matchAll(/`([A-Za-z][\w.]*\.ts)`/g)) {
        if (!sources.has(named)) missing.push(`${file}: ${named}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('checks what it claims to: the table helpers find rows and skip headers', () => {
    const table = '| code | HTTP |\n|---|---|\n| `a` | 400 |\n| `b` | 404 |\n\ntext\n| x |\n|:-:|\n| 1 |';
    expect(firstCells(table)).toEqual(['a', 'b', '1']);
    expect(section('# t\n## A\none\n## B\ntwo\n', 'A')).toBe('## A\none');
    expect(section('## Ab\n', 'A')).toBe('');
    const anchors = anchorsOf("# Top\n## An op's path\n```sh\n# not a heading\n```\n## Embedded (`DATA_DIR`)\n## Top");
    expect([...anchors]).toEqual(['top', 'an-ops-path', 'embedded-data_dir', 'top-1']);
  });
});
