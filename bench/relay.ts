/**
 * `npm run bench:relay`: the relay path under load, on this machine, in one run.
 *
 * - Durable relay events/s at saturation (`POST /v1/relay/events`, one event per request,
 *   closed loop) against the same PostgreSQL's single-row-commit rate measured in the same run,
 *   at the start and before each round (their median; goal ≥ 2×: inbox writes share the group
 *   commit).
 * - p50/p99 acknowledgement latency at half of the sustained rate (the lower of that rate and
 *   the rate events are processed at), open loop (goal p99 ≤ 50 ms).
 * - End-to-end replies/s with the offline brain over 10,000 conversations (event → its reply
 *   committed → `send` on the relay socket → ack).
 * - The message history query at 1,000,000 stored messages through
 *   `GET /v1/conversations/:key/messages` (goal p99 ≤ 5 ms), with its EXPLAIN.
 *
 * The server is pinned to core 0 and the load generators to core 1, PostgreSQL unpinned
 * (BENCHMARKING.md). Between phases the run waits until every accepted event was answered,
 * so no phase measures the previous one's backlog. `--quick` is a small run (the smoke test).
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { mintToken } from '../src/auth/mintToken.ts';
import { conversationQueries } from '../src/store/conversationRepository.ts';
import { messagesPerCommit, processedMessages, readMetrics } from './lib/archetyApi.ts';
import { parsedOrExit } from './lib/commandLine.ts';
import { benchClient, openBenchDatabase, pgSettings, singleRowCommitRate } from './lib/database.ts';
import { Connection } from './lib/httpConnection.ts';
import {
  cpuProbe,
  cpuTimeByCommand,
  cpuTimeByCommandLine,
  cpuTimeMs,
  cpuTimeSpent,
  fileLimit,
  hasTaskset,
  machineCpuMs,
  machineInfo,
} from './lib/machine.ts';
import { oneCoreNote, repoRoot, startRelayBenchServer } from './lib/processes.ts';
import { cleanupOnSignals, runMain } from './lib/progress.ts';
import { startRelayWorkers } from './lib/relayWorkers.ts';
import { addResultsSection, README_TEMPLATE, type Row, renderTable } from './lib/report.ts';
import { fmt, median, percentile, spread } from './lib/stats.ts';
import type { PostJob } from './relayWorker.ts';

const HELP = `Usage: npm run bench:relay [-- options]

The relay path under load on this machine: durable acknowledgements against the single-row
commit rate, processing, the ack latency at half of the sustained rate, end-to-end replies over 10,000
conversations, and the history query at 1,000,000 messages. About 5 minutes.

Options:
  --quick       a small run (seconds; the smoke test), never written to bench/README.md
  --no-readme   do not add the results to bench/README.md
  -h, --help    show this help

Environment (experiments):
  BENCH_SERVER_ENV='K=V K=V'      extra environment for the server, e.g. GROUP_COMMIT_LANES=2
  BENCH_SERVER_NODE_FLAGS='...'   extra Node flags for the server, e.g. --cpu-prof --cpu-prof-dir=D
  BENCH_SERVER_LOG=FILE           where the server's log goes
  BENCH_QUICK=1                   same as --quick
`;

function parseRelayOptions(argv: string[]): { quick: boolean; readme: boolean } | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean' },
      'no-readme': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  return { quick: values.quick === true || process.env.BENCH_QUICK === '1', readme: values['no-readme'] !== true };
}

const { quick, readme } = parsedOrExit('bench:relay', HELP, () => parseRelayOptions(process.argv.slice(2)));
const P = quick
  ? {
      rounds: 1,
      measureMs: 1500,
      warmMs: 300,
      conversations: 200,
      e2eEvents: 400,
      history: 20_000,
      historyQueries: 200,
      workers: 1,
      concurrency: 16,
    }
  : {
      rounds: 3,
      measureMs: 8000,
      warmMs: 2000,
      conversations: 10_000,
      e2eEvents: 10_000,
      history: 1_000_000,
      historyQueries: 3000,
      workers: 2,
      concurrency: 48,
    };
const SECRET = 'bench-relay-secret-bench-relay-secret!!';
const pinning = hasTaskset();
const core = (n: number) => (pinning ? n : null);
const log = (msg: string) => process.stdout.write(`[bench:relay] ${msg}\n`);

type Job = Omit<PostJob, 'id' | 'cmd' | 'url' | 'token' | 'senderFrom' | 'prefix'>;

/** Stores `count` messages over `conversations` direct conversations, straight into the tables. */
async function fillHistory(url: string, count: number, conversations: number): Promise<string[]> {
  const client = benchClient(url);
  await client.connect();
  try {
    await client.query('SET statement_timeout = 0');
    await client.query(
      `INSERT INTO conversations (key, kind, persona, chat_guid)
       SELECT 'user_+1999' || lpad(g::text, 7, '0') || '_persona_sage', 'direct', 'sage', 'hist' || g
         FROM generate_series(1, $1) g ON CONFLICT DO NOTHING`,
      [conversations],
    );
    const per = Math.ceil(count / conversations);
    await client.query(
      `INSERT INTO messages (id, conversation_key, sender, direction, text, created_at)
       SELECT 'h' || g, 'user_+1999' || lpad((g % $2 + 1)::text, 7, '0') || '_persona_sage',
              '+1999' || lpad((g % $2 + 1)::text, 7, '0'), CASE WHEN g % 2 = 0 THEN 'in' ELSE 'out' END,
              'history message number ' || g, now() - (g * interval '1 second')
         FROM generate_series(1, $1) g`,
      [per * conversations, conversations],
    );
    await client.query('ANALYZE conversations');
    await client.query('ANALYZE messages');
    return Array.from({ length: conversations }, (_, i) => `user_+1999${String(i + 1).padStart(7, '0')}_persona_sage`);
  } finally {
    await client.end();
  }
}

async function explainPage(url: string, key: string): Promise<string> {
  const client = benchClient(url);
  await client.connect();
  try {
    const { rows } = await client.query(`EXPLAIN ${conversationQueries.page}`, [
      key,
      new Date(Date.now() + 60_000),
      50,
    ]);
    return rows.map((r) => r['QUERY PLAN']).join('\n');
  } finally {
    await client.end();
  }
}

/** What a run started and must undo: at its end, when it fails, and on SIGINT or SIGTERM. */
const { cleanups, cleanup } = cleanupOnSignals(log, 'stopping the server and dropping the benchmark database');

async function main(): Promise<void> {
  const machine = machineInfo();
  log(
    `machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}; pinning ${pinning ? 'on' : 'off (no taskset)'}`,
  );
  const db = await openBenchDatabase(process.env);
  cleanups.push(() => db.drop());
  const settings = await pgSettings(db.url);
  const server = await startRelayBenchServer({
    // e.g. BENCH_SERVER_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile the server.
    program: [...(process.env.BENCH_SERVER_NODE_FLAGS ?? '').split(' ').filter(Boolean), 'bin/archety.js'],
    databaseUrl: db.url,
    secret: SECRET,
    core: core(0),
    // e.g. BENCH_SERVER_LOG=/tmp/server.log to read what the server logged.
    logFile: process.env.BENCH_SERVER_LOG,
  });
  cleanups.push(() => server.stop());
  log(`server ${server.url} (pid ${server.pid}), database ${new URL(db.url).pathname.slice(1)}`);
  const workers = startRelayWorkers(P.workers, core(1), fileLimit().granted);
  cleanups.push(() => {
    for (const w of workers) w.child.kill();
  });
  const key = new TextEncoder().encode(SECRET);
  const mint = (sub: string, role: 'relay' | 'admin') =>
    mintToken({ secret: key, issuer: 'archety', audience: 'archety', sub, role, ttlS: 7200 });
  const relayToken = await mint('bench-relay', 'relay');
  const adminToken = await mint('bench-admin', 'admin');

  let sends = 0;
  let accepted = 0;
  const relay = new WebSocket(`${server.url.replace('http', 'ws')}/v1/relay`, ['archety.v1', `bearer.${relayToken}`]);
  relay.on('message', (data) => {
    const f = JSON.parse(data.toString());
    if (f.type === 'send') {
      sends++;
      relay.send(JSON.stringify({ type: 'ack', id: f.id }));
    }
  });
  cleanups.push(() => relay.close());
  await new Promise((resolve, reject) => {
    relay.once('open', resolve);
    relay.once('error', reject);
  });
  // The replies are counted on this one socket: a run without it measures nothing.
  let relayClosed: number | undefined;
  relay.on('close', (code) => {
    relayClosed = code;
  });
  const pending = benchClient(db.url);
  cleanups.push(() => pending.end());
  await pending.connect();
  /** Waits until every accepted event was answered on the relay socket. */
  const drain = async (what: string) => {
    const started = Date.now();
    let last = 0;
    while (sends < accepted && Date.now() - started < 600_000) {
      if (relayClosed !== undefined) throw new Error(`the relay socket closed (${relayClosed}) during ${what}`);
      await new Promise((r) => setTimeout(r, 200));
      if (Date.now() - last > 5000) {
        last = Date.now();
        // Where the backlog is: events not yet processed, or replies not yet acknowledged.
        const { rows } = await pending.query<{ inbox: string; outbox: string }>(
          `SELECT (SELECT count(*) FROM relay_inbox WHERE status = 'pending') AS inbox,
                  (SELECT count(*) FROM relay_outbox WHERE status = 'pending') AS outbox`,
        );
        log(
          `  ${what}: ${sends}/${accepted} replies delivered; ${fmt(Number(rows[0].inbox))} events not yet processed, ${fmt(Number(rows[0].outbox))} replies not yet acknowledged`,
        );
      }
    }
  };
  const perWorker = Math.ceil(P.conversations / P.workers);
  let jobs = 0;
  const round = async (job: Job) => {
    const cpu0 = cpuTimeMs(server.pid);
    const started = performance.now();
    const results = await Promise.all(
      workers.map((w, i) =>
        w.run({
          ...job,
          url: server.url,
          token: relayToken,
          senderFrom: i * perWorker,
          prefix: `j${jobs++}-${Date.now()}`,
        }),
      ),
    );
    const ms = job.count === undefined ? job.durationMs : performance.now() - started;
    const cpu = cpuTimeMs(server.pid) - cpu0;
    const got = results.reduce((n, r) => n + r.accepted, 0);
    accepted += got;
    return {
      accepted: got,
      eventsPerSecond: (got * 1000) / ms,
      failed: results.reduce((n, r) => n + r.failed, 0),
      latencies: results.flatMap((r) => r.latencies),
      cpuUsPerEvent: (cpu * 1000) / Math.max(1, got),
      loopDelay: Math.max(...results.map((r) => r.loopDelayP99Ms)),
    };
  };

  try {
    log('single-row commit rate of this PostgreSQL (8 clients, autocommit INSERTs)…');
    const first = await singleRowCommitRate(db.url, 8, P.warmMs, P.measureMs);
    log(`  ${fmt(first.txPerSecond)} tx/s (${first.meanMs.toFixed(2)} ms each)`);
    // Measured again before each round: where the disk's speed moves between minutes (it moved
    // 3× between runs on one machine), the ratio is taken against the rate of the same minutes.
    const commitRates = [first.txPerSecond];

    log('warm-up…');
    await round({
      mode: 'closed',
      concurrency: P.concurrency,
      rate: 0,
      durationMs: P.warmMs,
      batch: 1,
      senders: perWorker,
    });
    await drain('warm-up');
    // The database was created for this run: give the planner the statistics autovacuum keeps
    // in a running deployment (autovacuum may be off where this runs, as on CI images).
    await pending.query('ANALYZE');

    const rates: number[] = [];
    const processedRates: number[] = [];
    const cpuPerEvent: number[] = [];
    const pgPerEvent: number[] = [];
    const processingAlone: number[] = [];
    const messagesPerCommits: number[] = [];
    const probes: string[] = [];
    for (let r = 0; r < P.rounds; r++) {
      const commits = await singleRowCommitRate(db.url, 8, P.warmMs / 4, P.measureMs / 4);
      commitRates.push(commits.txPerSecond);
      const before = await cpuProbe(core(0), quick);
      const cpu0 = cpuTimeMs(server.pid);
      const pg0 = cpuTimeByCommand('postgres');
      const machine0 = machineCpuMs();
      const generators0 = cpuTimeByCommandLine('relayWorker.ts');
      const t0 = performance.now();
      const m0 = await readMetrics(server.url);
      const s = await round({
        mode: 'closed',
        concurrency: P.concurrency,
        rate: 0,
        durationMs: P.measureMs,
        batch: 1,
        senders: perWorker,
      });
      // Where the CPU went while the burst lasted: the server's core (below 100 %, acknowledging
      // is bound by something else than the server's CPU), PostgreSQL's and the load
      // generators' cores, and the whole machine's (all its cores).
      const burstMs = performance.now() - t0;
      const cpu1 = cpuTimeMs(server.pid);
      const machine1 = machineCpuMs();
      const burstBusy = (cpu1 - cpu0) / burstMs;
      const generatorsCores = cpuTimeSpent(generators0, cpuTimeByCommandLine('relayWorker.ts')) / burstMs;
      const pgCores = cpuTimeSpent(pg0, cpuTimeByCommand('postgres')) / burstMs;
      const machineBusy = (machine1.busy - machine0.busy) / Math.max(1, machine1.all - machine0.all);
      // Processing alone: what the server spends per event while it works off the backlog
      // once the burst is over (no ingest any more), and how many messages each conversation
      // commit carried over the round.
      const m1 = await readMetrics(server.url);
      // Acknowledging may run ahead of processing (a backlog): the round's CPU and time per
      // event count until every event it acknowledged was answered.
      await drain(`round ${r + 1}`);
      const m2 = await readMetrics(server.url);
      const cpu2 = cpuTimeMs(server.pid);
      const drained = processedMessages(m2) - processedMessages(m1);
      const aloneUs = drained > 0 ? ((cpu2 - cpu1) * 1000) / drained : Number.NaN;
      const perCommit = messagesPerCommit(m0, m2);
      processingAlone.push(aloneUs);
      messagesPerCommits.push(perCommit);
      const cpuUs = ((cpuTimeMs(server.pid) - cpu0) * 1000) / Math.max(1, s.accepted);
      const pgUs = (cpuTimeSpent(pg0, cpuTimeByCommand('postgres')) * 1000) / Math.max(1, s.accepted);
      const processedPerSecond = (s.accepted * 1000) / (performance.now() - t0);
      const after = await cpuProbe(core(0), quick);
      probes.push(`${before.toFixed(0)}→${after.toFixed(0)}`);
      rates.push(s.eventsPerSecond);
      processedRates.push(processedPerSecond);
      cpuPerEvent.push(cpuUs);
      pgPerEvent.push(pgUs);
      log(
        `  round ${r + 1}/${P.rounds}: ${fmt(s.eventsPerSecond)} events/s acknowledged (${s.failed} failed; single-row commits just before: ${fmt(commits.txPerSecond)}/s), ${fmt(processedPerSecond)} events/s processed (until the last reply), server ${cpuUs.toFixed(0)} µs/event (PostgreSQL ${pgUs.toFixed(0)} µs), generator loop p99 ${s.loopDelay.toFixed(1)} ms, server busy ${(100 * burstBusy).toFixed(0)} % of its core during the burst, the machine ${(100 * machineBusy).toFixed(0)} % of all its cores (PostgreSQL ${pgCores.toFixed(2)} cores, the load generators ${generatorsCores.toFixed(2)}); processing alone (the drain after the burst, ${fmt(drained)} events) ${aloneUs.toFixed(0)} µs/event, ${perCommit.toFixed(2)} messages per conversation commit`,
      );
    }
    const saturation = median(rates);
    const commitRate = median(commitRates);
    // What the server sustains is the lower of the two: offered more than it processes, the
    // backlog fills to its high-water mark whatever the load, and the latency measured is the
    // backlog's. Half of the sustained rate is what "half saturation" means for a user.
    const sustained = Math.min(saturation, median(processedRates));

    log(`half of the sustained rate (${fmt(sustained / 2)} events/s), open loop…`);
    const half = await round({
      mode: 'open',
      concurrency: 0,
      rate: sustained / 2 / P.workers,
      durationMs: P.measureMs,
      batch: 1,
      senders: perWorker,
    });
    const p50 = percentile(half.latencies, 50);
    const p99 = percentile(half.latencies, 99);
    log(`  ack latency p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms at ${fmt(half.eventsPerSecond)} events/s`);
    await drain('half rate');

    log('batches of 50 events per request…');
    const batched = await round({
      mode: 'closed',
      concurrency: 4,
      rate: 0,
      durationMs: P.measureMs,
      batch: 50,
      senders: perWorker,
    });
    log(`  ${fmt(batched.eventsPerSecond)} events/s`);
    await drain('batches');

    log(`end to end: ${P.e2eEvents} events over ${P.conversations} conversations, offline brain…`);
    const sendsBefore = sends;
    const e2eCpu0 = cpuTimeMs(server.pid);
    const e2ePg0 = cpuTimeByCommand('postgres');
    const e2eStart = performance.now();
    await round({
      mode: 'closed',
      concurrency: P.concurrency,
      rate: 0,
      durationMs: 600_000,
      batch: 1,
      senders: perWorker,
      count: Math.ceil(P.e2eEvents / P.workers),
    });
    await drain('end to end');
    const e2eMs = performance.now() - e2eStart;
    const replies = sends - sendsBefore;
    const repliesPerSecond = (replies * 1000) / e2eMs;
    const e2eCpuMs = cpuTimeMs(server.pid) - e2eCpu0;
    const e2ePgMs = cpuTimeSpent(e2ePg0, cpuTimeByCommand('postgres'));
    log(
      `  ${replies} replies in ${(e2eMs / 1000).toFixed(1)} s: ${fmt(repliesPerSecond)} replies/s; server ${((e2eCpuMs * 1000) / replies).toFixed(0)} µs/reply (busy ${((100 * e2eCpuMs) / e2eMs).toFixed(0)} %), PostgreSQL ${((e2ePgMs * 1000) / replies).toFixed(0)} µs/reply (${((100 * e2ePgMs) / e2eMs).toFixed(0)} % of a core)`,
    );

    log(`history: storing ${fmt(P.history)} messages…`);
    const keys = await fillHistory(db.url, P.history, Math.min(10_000, P.conversations));
    const plan = await explainPage(db.url, keys[0]);
    const usesIndex = /Index (Only )?Scan.*messages_conversation_created_idx/.test(plan);
    log(`  EXPLAIN: ${(plan.split('\n').find((l) => /messages_conversation_created_idx/.test(l)) ?? plan).trim()}`);
    const latencies: number[] = [];
    // A warm-up of a tenth as many queries first (not measured): the table was just written.
    const warmup = Math.ceil(P.historyQueries / 10);
    // Over a keep-alive connection of the benchmark's own: undici's fetch added 0.3 ms to the
    // median and doubled the p99 (its allocations and this process's GC, on the core PostgreSQL shares).
    const serverUrl = new URL(server.url);
    const connection = new Connection(serverUrl);
    const head = (key: string) =>
      `GET /v1/conversations/${encodeURIComponent(key)}/messages?limit=50 HTTP/1.1\r\nhost: ${serverUrl.host}\r\nauthorization: Bearer ${adminToken}\r\n`;
    for (let i = 0; i < warmup + P.historyQueries; i++) {
      const k = keys[Math.floor(Math.random() * keys.length)];
      const request = head(k);
      const t = performance.now();
      const res = await connection.request(request, '');
      if (i >= warmup) latencies.push(performance.now() - t);
      if (res.status !== 200) throw new Error(`history answered ${res.status}`);
    }
    connection.close();
    const hp50 = percentile(latencies, 50);
    const hp99 = percentile(latencies, 99);
    log(`  history p50 ${hp50.toFixed(2)} ms, p99 ${hp99.toFixed(2)} ms`);

    const rows: Row[] = [
      {
        metric: 'durable relay events/s at saturation (HTTP, 1 event/request)',
        archety: `${fmt(saturation)} (${spread(rates)})`,
        peer: `${fmt(commitRate)} single-row commits/s (8 clients; median of ${commitRates.length}: ${spread(commitRates)})`,
        ratio: `${(saturation / commitRate).toFixed(2)}×`,
        goal: '≥ 2×',
        met: saturation / commitRate >= 2,
      },
      {
        metric: 'events/s processed at saturation (acknowledged ÷ time to the last reply)',
        archety: `${fmt(median(processedRates))} (${spread(processedRates)})`,
        peer: '',
        ratio: '',
        goal: '',
        met: null,
      },
      {
        metric: 'server CPU per event (ingest + processing + reply, offline brain)',
        archety: `${fmt(median(cpuPerEvent))} µs`,
        peer: `PostgreSQL ${fmt(median(pgPerEvent))} µs more`,
        ratio: '',
        goal: '≤ 150 µs',
        met: median(cpuPerEvent) <= 150,
      },
      {
        metric: 'server CPU per event, processing alone (the drain after each burst); messages per conversation commit',
        archety: `${fmt(median(processingAlone))} µs; ${median(messagesPerCommits).toFixed(2)}`,
        peer: '',
        ratio: '',
        goal: '',
        met: null,
      },
      {
        metric: `ack latency p50 / p99 at half the sustained rate (${fmt(half.eventsPerSecond)}/s: the lower of acknowledged and processed, halved)`,
        archety: `${p50.toFixed(1)} / ${p99.toFixed(1)} ms`,
        peer: '',
        ratio: '',
        goal: 'p99 ≤ 50 ms',
        met: p99 <= 50,
      },
      {
        metric: 'durable events/s in batches of 50',
        archety: fmt(batched.eventsPerSecond),
        peer: '',
        ratio: `${(batched.eventsPerSecond / commitRate).toFixed(2)}×`,
        goal: '',
        met: null,
      },
      {
        metric: `end-to-end replies/s, offline brain, ${fmt(P.conversations)} conversations`,
        archety: fmt(repliesPerSecond),
        peer: '',
        ratio: '',
        goal: quick ? '' : '≥ 2,000',
        met: quick ? null : repliesPerSecond >= 2000,
      },
      {
        metric: `history query p50 / p99 at ${fmt(P.history)} messages (HTTP, limit 50)`,
        archety: `${hp50.toFixed(2)} / ${hp99.toFixed(2)} ms`,
        peer: usesIndex ? 'index scan on messages_conversation_created_idx' : 'NO index scan',
        ratio: '',
        goal: 'p99 ≤ 5 ms, index scan',
        met: hp99 <= 5 && usesIndex,
      },
    ];
    const table = renderTable(rows);
    const command = `npm run bench:relay${quick ? ' -- --quick' : ''}`;
    const machineLine = `${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, PostgreSQL ${settings.version} (fsync ${settings.fsync}, synchronous_commit ${settings.synchronousCommit}), server on core 0, load on core 1${pinning ? oneCoreNote() : ' (unpinned: no taskset)'}`;
    console.log(`\n${table}\n\nCPU probe (M iterations/s, before→after each round, core 0): ${probes.join(', ')}`);
    console.log(`Machine: ${machineLine}\nCommand: ${command}\n`);
    if (!quick && readme) {
      addResultsSection(
        path.join(repoRoot, 'bench/README.md'),
        README_TEMPLATE,
        `### relay — ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC\n\n${table}\n\n- Machine: ${machineLine}\n- Command: \`${command}\`\n- CPU probe (core 0, M iterations/s before→after each round): ${probes.join(', ')}\n- EXPLAIN of the history query:\n\n\`\`\`\n${plan}\n\`\`\`\n`,
      );
      log('results added to bench/README.md');
    }
  } finally {
    await cleanup();
  }
}

runMain(main, cleanup);
