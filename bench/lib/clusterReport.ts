/**
 * The cluster benchmark's output: the per-size table (1, 2 and 3 processes), the goals of
 * issue 9 with ✓/✗ and their ratios, and the Redis command breakdown.
 */
import type { FailoverResult } from './clusterFailover.ts';
import type { MiniappFigures, RelayFigures } from './clusterLoad.ts';
import { renderMarkdownTable } from './report.ts';
import { fmt, percentile } from './stats.ts';

export interface SizeFigures {
  processes: number;
  /** Share of the miniapp ops whose socket was not on the session's owner. */
  forwardedShare: number;
  miniapp: MiniappFigures;
  relay: RelayFigures;
  probeBefore: number[];
  probeAfter: number[];
}

export interface LatencyFigures {
  offered: number;
  /** Measured at half the 2-process saturation rate (the goal's point), else at a quiet rate. */
  half: boolean;
  local: number[];
  remote: number[];
}

/** Redis calls per second by command while the cluster idled (other Redis users, lease extensions). */
export interface RedisBackground {
  perSecond: Map<string, number>;
  windowMs: number;
}

/**
 * The run's Redis calls per op in a window, by command: PUBLISH counted exactly on the run's
 * channels, every other command from the server-wide counters less its idle rate.
 */
export function redisPerOp(f: MiniappFigures | RelayFigures, ops: number, bg: RedisBackground) {
  const byCommand: [string, number][] = [['publish', f.cost.publishes / ops]];
  let gross = f.cost.publishes;
  for (const [cmd, n] of f.cost.redis) {
    if (cmd === 'publish') continue;
    gross += n;
    const net = n - ((bg.perSecond.get(cmd) ?? 0) * f.cost.windowMs) / 1000;
    if (net / ops >= 0.0005) byCommand.push([cmd, net / ops]);
  }
  byCommand.sort((a, b) => b[1] - a[1]);
  const net = byCommand.reduce((a, [, v]) => a + v, 0);
  return { net, gross: gross / ops, byCommand };
}

function breakdown(f: MiniappFigures | RelayFigures, ops: number, bg: RedisBackground): string {
  return redisPerOp(f, ops, bg)
    .byCommand.slice(0, 6)
    .map(([cmd, n]) => `${cmd.toUpperCase()} ${fmt(n, 3)}`)
    .join(', ');
}

export function sizeTable(sizes: SizeFigures[], bg: RedisBackground): string {
  const rows = sizes.map((s) => {
    const m = s.miniapp;
    const r = s.relay;
    const rm = redisPerOp(m, m.applied, bg);
    const rr = redisPerOp(r, Math.max(1, (r.eventsPerSecond * r.cost.windowMs) / 1000), bg);
    return [
      String(s.processes),
      `${fmt(s.forwardedShare * 100)}%`,
      fmt(m.opsPerSecond),
      `${fmt(m.usPerOp, 1)} µs`,
      m.cost.cpuPctByNode.map((p) => `${fmt(p)}%`).join(' + '),
      `${fmt(rm.net, 2)}: ${breakdown(m, m.applied, bg)}`,
      fmt(r.eventsPerSecond),
      `${fmt(r.usPerEvent)} µs`,
      r.cost.cpuPctByNode.map((p) => `${fmt(p)}%`).join(' + '),
      fmt(rr.net, 2),
    ];
  });
  return renderMarkdownTable(
    [
      'processes',
      'ops forwarded',
      'miniapp ops/s (saturation)',
      'server CPU per op (all processes)',
      'each process, % of a core',
      'Redis calls per op (this run): by command',
      'relay events/s (saturation)',
      'server CPU per event',
      'each process, % of a core',
      'Redis calls per event (net)',
    ],
    rows,
    ['r', 'r', 'r', 'r', 'r', 'l', 'r', 'r', 'r', 'r'],
  );
}

export interface Goal {
  text: string;
  met: boolean;
  /** A figure shown beside the goals, judged by none. */
  info?: boolean;
}

export function goals(
  sizes: SizeFigures[],
  latency: LatencyFigures[] | undefined,
  failover: FailoverResult,
  leaseMs: number,
  bg: RedisBackground,
): Goal[] {
  const out: Goal[] = [];
  for (const l of latency ?? []) {
    const p = (v: number[], q: number) => percentile(v, q);
    const d50 = p(l.remote, 50) - p(l.local, 50);
    const d99 = p(l.remote, 99) - p(l.local, 99);
    const where = l.half
      ? 'at half saturation'
      : "at a quiet rate (not the goal's point: what forwarding costs on idle event loops)";
    const line50 = `op → applied overhead of a socket on a non-owner process ${where} (${fmt(l.offered)} ops/s, 2 processes): p50 ${fmt(p(l.remote, 50), 2)} vs ${fmt(p(l.local, 50), 2)} ms on the owner = +${fmt(d50, 2)} ms`;
    const line99 = `… p99 ${fmt(p(l.remote, 99), 2)} vs ${fmt(p(l.local, 99), 2)} ms = +${fmt(d99, 2)} ms`;
    if (!l.half) {
      out.push({ text: `${line50}; ${line99.slice(2)}`, met: true, info: true });
      continue;
    }
    out.push({ text: `${line50} (goal ≤ 1 ms: ${fmt(d50 / 1, 2)}× the limit)`, met: d50 <= 1 });
    out.push({ text: `${line99} (goal ≤ 5 ms: ${fmt(d99 / 5, 2)}× the limit)`, met: d99 <= 5 });
  }
  const times = failover.rounds.map((r) => r.failoverMs);
  const missing = times.filter((t) => Number.isNaN(t)).length;
  const f99 = missing ? Number.POSITIVE_INFINITY : percentile(times, 99);
  out.push({
    text: `failover over ${failover.rounds.length} SIGKILLs of the owner under load: p50 ${fmt(percentile(times, 50))} ms, p99 ${fmt(f99)} ms${missing ? ` (${missing} rounds never served again)` : ''} (goal ≤ 2 × ACTOR_LEASE_MS = ${fmt(2 * leaseMs)} ms: ${fmt(f99 / (2 * leaseMs), 2)}× the limit)`,
    met: f99 <= 2 * leaseMs,
  });
  out.push({
    text: `acknowledged ops lost over the kills: ${failover.lost.length} of ${fmt(failover.acknowledged)}; versions announced with two ops: ${failover.twice.length} (goal 0)`,
    met: failover.lost.length === 0 && failover.twice.length === 0,
  });
  const one = sizes.find((s) => s.processes === 1);
  if (one) {
    const r = redisPerOp(one.miniapp, one.miniapp.applied, bg);
    out.push({
      text: `Redis calls per applied op on the owner path at steady state (1 process, every socket on the owner): ${fmt(r.net, 3)} (${breakdown(one.miniapp, one.miniapp.applied, bg)}; ${fmt(r.gross, 3)} counting every Redis user of the machine) (goal ≤ 1: ${fmt(r.net, 2)}× the limit)`,
      met: r.net <= 1,
    });
  }
  return out;
}

export function renderGoals(list: Goal[]): string {
  return list.map((g) => `- ${g.info ? '·' : g.met ? '✓' : '✗'} ${g.text}`).join('\n');
}

export function failoverLines(f: FailoverResult): string {
  const rounds = f.rounds
    .map((r, i) => `${i + 1}. ${r.killed}: ${fmt(r.failoverMs)} ms (lease moved ${fmt(r.leaseMovedMs)} ms)`)
    .join('; ');
  const errors = Object.entries(f.errors)
    .map(([k, v]) => `${k}×${v}`)
    .join(', ');
  return (
    `Failover rounds (kill → first applied op of the new owner): ${rounds}.\n` +
    `Failover ops: ${fmt(f.sent)} edits sent, ${fmt(f.acknowledged)} acknowledged, ${fmt(f.stored)} stored, ` +
    `${f.unanswered} unanswered at the end, ${f.conflicts} conflicts${errors ? `, errors ${errors}` : ''}` +
    (f.lost.length ? `; LOST: ${f.lost.slice(0, 5).join('; ')}` : '') +
    (f.twice.length ? `; ANNOUNCED TWICE: ${f.twice.slice(0, 5).join('; ')}` : '')
  );
}
