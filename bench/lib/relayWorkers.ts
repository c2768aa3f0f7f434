/** The relay benchmarks' load generators (`bench/relayWorker.ts`), each one process answering posting jobs. */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import type { PostJob, PostResult } from '../relayWorker.ts';
import { pinnedCommand } from './machine.ts';
import { repoRoot } from './processes.ts';

/** A relay generator (`bench/relayWorker.ts`) and its one job at a time. */
export interface RelayWorker {
  child: ChildProcess;
  run(job: Omit<PostJob, 'id' | 'cmd'>): Promise<PostResult>;
}

export function startRelayWorkers(count: number, core: number | null, fileLimit: number): RelayWorker[] {
  return Array.from({ length: count }, () => {
    const { file, args } = pinnedCommand(core, fileLimit, [
      process.execPath,
      '--max-semi-space-size=8',
      '--import',
      'tsx',
      path.join(repoRoot, 'bench/relayWorker.ts'),
    ]);
    const child = spawn(file, args, { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let next = 1;
    const waiting = new Map<number, { resolve: (r: PostResult) => void; reject: (e: Error) => void }>();
    child.on('message', (m: { id: number; ok: boolean; result?: PostResult; error?: string }) => {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      if (m.ok && m.result) w?.resolve(m.result);
      else w?.reject(new Error(`relay generator: ${m.error}`));
    });
    child.once('exit', (code, signal) => {
      for (const w of waiting.values()) w.reject(new Error(`relay generator exited (${code ?? signal})`));
      waiting.clear();
    });
    return {
      child,
      run: (job) =>
        new Promise((resolve, reject) => {
          const id = next++;
          waiting.set(id, { resolve, reject });
          child.send({ ...job, id, cmd: 'post' });
        }),
    };
  });
}
