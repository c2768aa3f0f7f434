/**
 * What the benchmark reads from the machine: a process's CPU time and RSS from /proc, the CPU
 * speed probe (a fixed busy loop timed on one core), core pinning and the file limit.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { GENERATOR_CORE, SERVER_CORE } from './context.ts';

let clockTicks: number | undefined;

function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    clockTicks = Number(r.stdout?.trim()) || 100;
  }
  return clockTicks;
}

/** User + system CPU time of `pid` so far, ms (clock-tick resolution, usually 10 ms). */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / ticksPerSecond();
}

/**
 * Time the main thread of `pid` has spent runnable but waiting for a CPU, ms
 * (/proc/<pid>/schedstat); NaN where the kernel does not report it.
 */
export function runDelayMs(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e6;
  } catch {
    return Number.NaN;
  }
}

/** Resident set size of `pid`, KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

export function hasTaskset(): boolean {
  return spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Pins an already running process to one core. */
export function pin(pid: number, core: number): void {
  execFileSync('taskset', ['-cp', String(core), String(pid)], { stdio: 'ignore' });
}

/** The open-file limit the benchmark's processes get: 65536 when allowed, else the hard limit. */
export function fileLimit(): { soft: number; hard: number; wanted: number; granted: number } {
  const read = (flag: string) => spawnSync('bash', ['-c', `ulimit ${flag}`], { encoding: 'utf8' }).stdout.trim();
  const soft = Number(read('-Sn'));
  const hardText = read('-Hn');
  const hard = hardText === 'unlimited' ? Number.POSITIVE_INFINITY : Number(hardText);
  const wanted = 65536;
  return { soft, hard, wanted, granted: Math.min(wanted, hard) };
}

/** A command line that raises the file limit to `limit`, then pins to `core` (when possible). */
export function pinnedCommand(core: number | null, limit: number, command: string[]): { file: string; args: string[] } {
  const pinning = core === null ? [] : ['taskset', '-c', String(core)];
  return { file: 'bash', args: ['-c', `ulimit -n ${limit} && exec "$@"`, 'bash', ...pinning, ...command] };
}

/** How long a probe runs (ms): 300, or 50 in a quick run, where its figure only has to be there. */
const PROBE_MS = { full: 300, quick: 50 };

function probeScript(ms: number): string {
  return `
const end = performance.now() + ${ms};
let n = 0, x = 0;
while (performance.now() < end) { for (let i = 0; i < 10000; i++) x = (x * 1103515245 + 12345) | 0; n++; }
// x is printed to stderr only in the impossible case, so the loop's result stays observable.
if (x === 42) process.stderr.write('');
process.stdout.write(String((n * 10000) / ${ms} / 1000));
`;
}

/** Runs a fixed busy loop for 0.3 s (0.05 s when `quick`) on `core`: millions of loop iterations per second. */
export function cpuProbe(core: number | null, quick = false): Promise<number> {
  const script = probeScript(quick ? PROBE_MS.quick : PROBE_MS.full);
  const cmd =
    core === null ? [process.execPath, '-e', script] : ['taskset', '-c', String(core), process.execPath, '-e', script];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(Number(out)) : reject(new Error(`cpu probe exited with ${code}`)),
    );
  });
}

/** The probe on the server's core, then on the generators' (one figure when nothing is pinned). */
export async function cpuProbes(pinned: boolean, quick: boolean): Promise<number[]> {
  return pinned
    ? [await cpuProbe(SERVER_CORE, quick), await cpuProbe(GENERATOR_CORE, quick)]
    : [await cpuProbe(null, quick)];
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  node: string;
  kernel: string;
}

export function machineInfo(): MachineInfo {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpu = m[1].trim();
  } catch {
    // Not Linux: os.cpus() it is.
  }
  // os.cpus(), not availableParallelism(): the latter shrinks once this process is pinned.
  return { cpu, cores: os.cpus().length, node: process.version, kernel: os.release() };
}

/**
 * CPU time so far (user + system, ms) of every process whose command name is `comm` (e.g.
 * `postgres`: the server and all its backends), by pid. Processes that end are missed.
 */
export function cpuTimeByCommand(comm: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) out.set(pid, cpuTimeMs(pid));
    } catch {
      // It ended in between.
    }
  }
  return out;
}

/** `cpuTimeByCommand` for processes whose command line contains `part` (e.g. a script's name). */
export function cpuTimeByCommandLine(part: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(part)) out.set(pid, cpuTimeMs(pid));
    } catch {
      // It ended in between.
    }
  }
  return out;
}

/** CPU time (ms) spent between two `cpuTimeByCommand` readings; a process new in `after` counts from 0. */
export function cpuTimeSpent(before: Map<number, number>, after: Map<number, number>): number {
  let ms = 0;
  for (const [pid, t] of after) ms += t - (before.get(pid) ?? 0);
  return ms;
}

/**
 * The whole machine's CPU time so far (/proc/stat, every core), ms: busy (user, nice, system,
 * irq, softirq, steal) and all (busy + idle + iowait). Two readings give how busy the machine
 * was between them, as a share of all its cores.
 */
export function machineCpuMs(): { busy: number; all: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = user + nice + system + irq + softirq + (steal || 0);
  const ms = 1000 / ticksPerSecond();
  return { busy: busy * ms, all: (busy + idle + iowait) * ms };
}
