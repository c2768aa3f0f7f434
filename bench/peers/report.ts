/**
 * The comparison's one table (a row per server: medians over the rounds, with their spread),
 * the goal lines with their ratios, the ladders, and the section for bench/README.md.
 */
import { balanced, describeAccount } from '../lib/accounting.ts';
import type { OpAccount } from '../lib/protocol.ts';
import { renderMarkdownTable } from '../lib/report.ts';
import { fmt, median, spread, sum } from '../lib/stats.ts';
import type { ConnectFigures, LadderStep, PhaseFigures } from './phases.ts';
import type { PeerName } from './protocol.ts';
import { SPECS } from './servers.ts';

/** The goals of issue 4, never weakened: Archety's saturated edits/s over each peer's. */
export const GOALS: { peer: PeerName; ratio: number }[] = [
  { peer: 'socketio', ratio: 5 },
  { peer: 'colyseus', ratio: 5 },
  { peer: 'hocuspocus', ratio: 2 },
];
/** …and at least this share of the raw uWebSockets.js relay. */
export const RAW_SHARE = 0.5;

export interface ServerRound {
  /** CPU-speed probe (M iterations/s) on the server core and the generator core, before and after. */
  probeBefore: number[];
  probeAfter: number[];
  connect: ConnectFigures;
  saturation: PhaseFigures;
  half: PhaseFigures;
  common: PhaseFigures;
}

export interface ServerResult {
  peer: PeerName;
  ladder: LadderStep[];
  rounds: ServerRound[];
  total: OpAccount;
}

export interface Summary {
  peer: PeerName;
  editsPerSecond: number;
  editsSpread: string;
  usPerEdit: number;
  pgUsPerEdit: number;
  commonP99: number;
}

const med = (rounds: ServerRound[], f: (r: ServerRound) => number) => median(rounds.map(f));
const ms = (v: number) => (Number.isFinite(v) ? (v < 10 ? fmt(v, 1) : fmt(v)) : 'n/a');

function latencyCell(rounds: ServerRound[], pick: (r: ServerRound) => PhaseFigures, withRate: boolean): string {
  const p50 = med(rounds, (r) => pick(r).p50);
  const p99s = rounds.map((r) => pick(r).p99);
  const max = Math.max(...rounds.map((r) => pick(r).max));
  const rate = withRate ? ` at ${fmt(med(rounds, (r) => pick(r).offered))}/s` : '';
  const s = rounds.length > 1 ? ` (p99 ${spread(p99s, 1)})` : '';
  return `${ms(p50)} / ${ms(median(p99s))} / ${ms(max)}${rate}${s}`;
}

export function summarize(r: ServerResult): Summary {
  const eps = r.rounds.map((x) => x.saturation.editsPerSecond);
  return {
    peer: r.peer,
    editsPerSecond: median(eps),
    editsSpread: spread(eps),
    usPerEdit: med(r.rounds, (x) => x.saturation.serverUsPerEdit),
    pgUsPerEdit: med(r.rounds, (x) => x.saturation.pgUsPerEdit),
    commonP99: med(r.rounds, (x) => x.common.p99),
  };
}

/** The one table: a row per server. */
export function renderPeersTable(results: ServerResult[], commonRate: number): string {
  const header = [
    'server',
    'trip state kept',
    'saturated edits/s (rounds) [server core busy]',
    'frames/s delivered at saturation',
    'server CPU per edit (→ edits/s per core)',
    `echo p50 / p99 / max ms at ${fmt(commonRate)} edits/s (common)`,
    'echo p50 / p99 / max ms at own half saturation',
    'RSS idle → with clients (per socket)',
    'errors / drops',
    'generator loop p99',
  ];
  const rows = results.map((r) => {
    const s = summarize(r);
    const rounds = r.rounds;
    const phases = [...rounds.flatMap((x) => [x.saturation, x.half, x.common]), ...r.ladder];
    const errors = r.total.error + r.total.conflict + r.total.unmatched;
    const drops = sum(phases.map((p) => p.dropped)) + sum(rounds.map((x) => x.connect.failed));
    const frames = med(rounds, (x) => x.saturation.framesPerSecond);
    const deliveries = med(rounds, (x) => x.saturation.deliveriesPerSecond);
    const merged = deliveries > frames * 1.05 ? ` (${fmt(deliveries)} edit deliveries)` : '';
    const pg = Number.isFinite(s.pgUsPerEdit) ? ` + PostgreSQL ${fmt(s.pgUsPerEdit)} µs` : '';
    const perCore = s.usPerEdit > 0 ? ` (→ ${fmt(1e6 / s.usPerEdit)}/s)` : '';
    const rssIdle = med(rounds, (x) => x.connect.rssBeforeKiB) / 1024;
    const rssWith = med(rounds, (x) => x.connect.rssAfterKiB) / 1024;
    const perSocket = med(rounds, (x) => x.connect.perSocketKiB);
    return [
      SPECS[r.peer].label,
      SPECS[r.peer].state,
      `${fmt(s.editsPerSecond)}${s.editsSpread ? ` (${s.editsSpread})` : ''} [${fmt(med(rounds, (x) => x.saturation.serverCpuPct))}%]`,
      `${fmt(frames)}${merged}`,
      `${fmt(s.usPerEdit, 1)} µs${pg}${perCore}`,
      latencyCell(rounds, (x) => x.common, false),
      latencyCell(rounds, (x) => x.half, true),
      `${fmt(rssIdle)} → ${fmt(rssWith)} MiB (${fmt(perSocket, 1)} KiB)`,
      `${fmt(errors)} / ${fmt(drops)}`,
      `${fmt(Math.max(...phases.map((p) => p.generatorEldP99Ms)), 1)} ms`,
    ];
  });
  return renderMarkdownTable(header, rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']);
}

/** The goal lines: each ratio, measured and projected from CPU per edit, and whether it is met. */
export function goalLines(results: ServerResult[]): string[] {
  const by = new Map(results.map((r) => [r.peer, summarize(r)]));
  const a = by.get('archety');
  if (!a) return ['Goals: not judged (Archety was not run).'];
  const lines: string[] = [];
  const verdict = (ok: boolean) => (ok ? 'met' : '**not met**');
  for (const g of GOALS) {
    const p = by.get(g.peer);
    if (!p) continue;
    const ratio = a.editsPerSecond / p.editsPerSecond;
    const cpuRatio = p.usPerEdit / a.usPerEdit;
    const p99Ok = a.commonP99 <= p.commonP99;
    lines.push(
      `- Archety ≥ ${g.ratio}× ${SPECS[g.peer].label}'s saturated edits/s: ${fmt(a.editsPerSecond)} vs ${fmt(p.editsPerSecond)} = ` +
        `**${fmt(ratio, 2)}×** measured (${fmt(cpuRatio, 2)}× by server CPU per edit) — ${verdict(ratio >= g.ratio)}; ` +
        `p99 at the common rate ${ms(a.commonP99)} vs ${ms(p.commonP99)} ms — ${verdict(p99Ok)}`,
    );
  }
  const raw = by.get('raw');
  if (raw) {
    const share = a.editsPerSecond / raw.editsPerSecond;
    const cpuShare = raw.usPerEdit / a.usPerEdit;
    lines.push(
      `- Archety ≥ ${fmt(RAW_SHARE * 100)}% of raw uWebSockets.js: ${fmt(a.editsPerSecond)} vs ${fmt(raw.editsPerSecond)} edits/s = ` +
        `**${fmt(share * 100)}%** measured (${fmt(cpuShare * 100)}% by server CPU per edit) — ${verdict(share >= RAW_SHARE)}`,
    );
  }
  return lines;
}

/** One line per server: its ladder of offered rates. */
export function ladderLines(results: ServerResult[]): string[] {
  return results.map((r) => {
    const steps = r.ladder.map(
      (s) =>
        `${fmt(s.offered)}→${fmt(s.editsPerSecond)} (p99 ${ms(s.p99)} ms, ${fmt(s.serverCpuPct)}% core)${s.saturated ? ` saturated: ${s.saturated}` : ''}`,
    );
    return `- ${SPECS[r.peer].label}: ${steps.join('; ')}`;
  });
}

export function accountLines(results: ServerResult[]): string[] {
  return results.map((r) => `- ${SPECS[r.peer].label}: ${describeAccount(r.total)}`);
}

export function accountsBalance(results: ServerResult[]): boolean {
  return results.every((r) => balanced(r.total));
}

export function probeLine(results: ServerResult[]): string {
  const parts = results.flatMap((r) =>
    r.rounds.map(
      (x, i) =>
        `${SPECS[r.peer].label} r${i + 1} ${x.probeBefore.map((p) => fmt(p)).join('/')}→${x.probeAfter.map((p) => fmt(p)).join('/')}`,
    ),
  );
  return `CPU probe (M iterations/s, core 0 / core 1, before→after each server's round): ${parts.join('; ')}.`;
}
