/**
 * Many quiet sessions, the shape this product mostly sees: every session created in the run
 * (1,000 by default) with ⌈sockets ÷ sessions⌉ sockets each (10,000 in all), a few ops per
 * session per second (2,000 ops/s in all), sent on a fixed schedule (open loop) and
 * interleaved, so consecutive ops go to different sessions and nearly every op is a batch of
 * its own. The raw uWebSockets.js relay carries the same load on the same sockets.
 */
import type { Context } from './context.ts';
import { connectAll, describeLoad, disconnectAll, type LoadFigures, runLoad, type Shape } from './loadPhase.ts';
import { phase, progress } from './progress.ts';
import { fmt, percentile } from './stats.ts';

export interface QuietRun extends LoadFigures {
  p50: number;
  p99: number;
  max: number;
}

export interface QuietFigures {
  shape: Shape;
  rate: number;
  measureMs: number;
  archety: QuietRun;
  raw: QuietRun;
}

async function quietRun(ctx: Context, target: 'archety' | 'raw', shape: Shape, warmMs: number): Promise<QuietRun> {
  const { o } = ctx;
  await connectAll(ctx, target, shape);
  const f = await runLoad(
    ctx,
    target,
    { cmd: 'rate', rate: o.quietRate, interleave: true },
    warmMs,
    o.quietMeasureMs,
    shape,
  );
  await disconnectAll(ctx);
  const run = {
    ...f,
    p50: percentile(f.latencies, 50),
    p99: percentile(f.latencies, 99),
    max: f.latencies.reduce((m, v) => Math.max(m, v), 0),
  };
  progress(
    `  ${target}: p50 ${fmt(run.p50, 2)} ms, p99 ${fmt(run.p99, 2)} ms, max ${fmt(run.max)} ms; ${describeLoad(f)}`,
  );
  return run;
}

/** The phase, or null when `--quiet-rate 0` skips it. */
export async function quietPhase(ctx: Context): Promise<QuietFigures | null> {
  const { o } = ctx;
  if (o.quietRate === 0) return null;
  const rooms = ctx.sessions.length;
  const shape = { rooms, fanout: Math.min(ctx.users.length, Math.ceil(o.holdSockets / rooms)) };
  const warmMs = o.quick ? 500 : 3000;
  phase(
    `many quiet sessions: ${fmt(shape.rooms * shape.fanout)} sockets over ${fmt(rooms)} sessions, ` +
      `${fmt(o.quietRate)} ops/s in all (open loop, interleaved), Archety then the raw relay`,
  );
  const archety = await quietRun(ctx, 'archety', shape, warmMs);
  const raw = await quietRun(ctx, 'raw', shape, warmMs);
  return { shape, rate: o.quietRate, measureMs: o.quietMeasureMs, archety, raw };
}
