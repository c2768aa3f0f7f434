/**
 * This process's id among the processes of a cluster: random at every start, so a restarted
 * process is never mistaken for its earlier self. It prefixes every connection id
 * (`<process id>.<n>`), names the process's bus channel and is the owner a lease records, so
 * a frame for a connection, or work for an actor, finds its process. `NODE_ID` names the
 * process for people (logs, `/ready`); this is for routing.
 */
import { randomBytes } from 'node:crypto';

export const processId = randomBytes(6).toString('hex');

/** The process a connection id belongs to. */
export function processOfConn(conn: string): string {
  const dot = conn.indexOf('.');
  return dot < 0 ? '' : conn.slice(0, dot);
}
