/**
 * The benchmark's output: the markdown summary table, and its section in bench/README.md
 * (newest first, older sections kept).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export interface Row {
  metric: string;
  archety: string;
  peer: string;
  ratio: string;
  goal: string;
  /** true / false for a goal, null for an informative row. */
  met: boolean | null;
}

export function renderTable(rows: Row[]): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  const lines = [
    '| metric | Archety | peer / limit | ratio | goal | met? |',
    '|---|---:|---|---:|---|:---:|',
    ...rows.map(
      (r) =>
        `| ${cell(r.metric)} | ${cell(r.archety)} | ${cell(r.peer)} | ${cell(r.ratio)} | ${cell(r.goal)} | ${r.met === null ? '—' : r.met ? 'yes' : '**no**'} |`,
    ),
  ];
  return lines.join('\n');
}

/** A markdown table with the given header cells (`align`: 'l' or 'r' per column, default left). */
export function renderMarkdownTable(header: string[], rows: string[][], align: ('l' | 'r')[] = []): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${header.map(cell).join(' | ')} |`,
    `|${header.map((_, i) => (align[i] === 'r' ? '---:' : '---')).join('|')}|`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}

/** Where result sections start in bench/README.md; new ones go right after it. */
export const RESULTS_MARKER = '<!-- results: newest first; bench/miniapp.ts inserts new sections below this line -->';

/** bench/README.md when it does not exist yet (the full text lives in the file itself). */
export const README_TEMPLATE = `# Benchmarks\n\n\`npm run bench:miniapp\` (\`bench/miniapp.ts\`): see its header comment.\n`;

/** Inserts `section` after the results marker of `file` (creating it from `template` when absent). */
export function addResultsSection(file: string, template: string, section: string): void {
  let text = existsSync(file) ? readFileSync(file, 'utf8') : template;
  if (!text.includes(RESULTS_MARKER)) text = `${text.trimEnd()}\n\n## Results\n\n${RESULTS_MARKER}\n`;
  const at = text.indexOf(RESULTS_MARKER) + RESULTS_MARKER.length;
  text = `${text.slice(0, at)}\n\n${section.trim()}\n${text.slice(at).replace(/^\n*/, '\n')}`;
  writeFileSync(file, text.replace(/\n{3,}/g, '\n\n'));
}
