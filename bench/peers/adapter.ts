/**
 * What the load generator needs from a server's client library: connect one authenticated
 * client to a room, insert its budget item, send label edits, and report the broadcasts it
 * receives. Each server has one adapter (`bench/peers/<name>/client.ts`) written with that
 * server's own client library, as its documentation shows.
 *
 * Edits are numbered per client: 0 is the insert of its item, then 1, 2, … the label edits.
 */

/** What a client reports to the driver. */
export interface ClientHooks {
  /** A broadcast frame carrying `edits` edits arrived on this client's connection. */
  frame(edits: number): void;
  /** The server's broadcast of this client's own edit `seq` came back to it (the own echo). */
  echo(seq: number): void;
  /** The server answered edit `seq` with a conflict (Archety only). */
  conflict(seq: number): void;
  /** The server refused edit `seq`. */
  refused(seq: number, code: string): void;
  /** The connection closed without being asked to. */
  dropped(): void;
}

export interface ConnectSpec {
  /** `http://host:port` of the server. */
  baseUrl: string;
  room: string;
  user: string;
  /** This client's index in its room: it edits budget item `item-<index>`. */
  index: number;
  /** A JWT for `user` (the raw relay ignores it: it is the limit, with no authentication). */
  token: string;
  /** Unique for the whole run: edit ids are `<prefix><seq>`. */
  prefix: string;
}

export interface PeerConnection {
  /** True when the room's state already holds this client's item (no insert needed). */
  readonly hasItem: boolean;
  /** Sends edit 0: inserts `{id: item-<index>, label, amount}` into the trip's budget items. */
  insert(): void;
  /** Sends edit `seq`: sets the label of this client's item. */
  edit(seq: number): void;
  close(): Promise<void>;
}

export type ConnectOutcome = { ok: true; conn: PeerConnection } | { ok: false; reason: string };

export interface ClientAdapter {
  connect(spec: ConnectSpec, hooks: ClientHooks): Promise<ConnectOutcome>;
}

/** The item a client edits. */
export function itemId(index: number): string {
  return `item-${index}`;
}

/** The label edit `seq` writes. */
export function labelFor(seq: number): string {
  return `label ${seq}`;
}

/** `seq` of an edit id `<prefix><seq>` when it is this client's, else -1. */
export function ownSeq(editId: string, prefix: string): number {
  return editId.startsWith(prefix) ? Number(editId.slice(prefix.length)) : -1;
}

/** Resolves with `outcome` or, after `ms`, with a timeout failure. */
export function withTimeout(outcome: Promise<ConnectOutcome>, ms: number): Promise<ConnectOutcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<ConnectOutcome>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, reason: 'timeout' }), ms);
  });
  return Promise.race([outcome, timeout]).finally(() => clearTimeout(timer));
}
