/** The frames of `/v1/miniapp/:sessionId` (docs/protocol.md), shared by the server and the client SDK. */
import type { Op } from './ops.ts';

export interface AppliedOp {
  opId: string;
  by: string;
  version: number;
  op: Op;
}

export type ServerFrame =
  | { type: 'snapshot'; version: number; state: unknown; participants: string[]; online: string[] }
  | ({ type: 'applied' } & AppliedOp)
  | { type: 'conflict'; opId: string; version: number; ops: AppliedOp[] }
  | { type: 'presence'; online: string[] }
  | { type: 'error'; code: string; message: string; ref?: string };

export type ClientFrame = { type: 'op'; opId: string; baseVersion: number; op: Op } | { type: 'resume'; since: number };
