/**
 * A load-generator process of `bench/peers.ts`, driven by the parent over IPC: it connects
 * its rooms' clients to one server at a time with that server's own client library
 * (`bench/peers/<name>/client.ts`) and drives their edits (`bench/peers/driver.ts`). Every
 * load answer carries this process's CPU time and event-loop delay, so a saturated generator
 * is visible in the results.
 *
 * Run by the parent as `node --max-semi-space-size=8 --import tsx bench/peersWorker.ts`.
 */
import { configureTokens } from './lib/workerShared.ts';
import { connect, disconnect, load } from './peers/driver.ts';
import type { PeerRequest } from './peers/protocol.ts';

async function handle(req: PeerRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'init':
      configureTokens(req.workerId, req.jwt);
      return { pid: process.pid };
    case 'connect':
      return connect(req);
    case 'load':
      return load(req);
    case 'disconnect':
      return disconnect();
    case 'exit':
      setImmediate(() => process.exit(0));
      return {};
  }
}

process.on('message', (req: PeerRequest) => {
  handle(req).then(
    (result) => process.send?.({ id: req.id, ok: true, result }),
    (err: unknown) =>
      process.send?.({ id: req.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
