/**
 * The servers compared, each started as its own process on the server core, the same way:
 * Archety as users run it (`node bin/archety.js start`), the raw uWebSockets.js relay
 * (`bench/rawRelay.ts`, the limit) and the three peers (`bench/peers/<name>/server.ts`), every
 * one through tsx with the same environment basics (`NODE_ENV=production`, port 0, loopback).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { MINIAPP_BENCH_SERVER_ENV, repoRoot, type ServerProcess, startServerProcess } from '../lib/processes.ts';
import type { PeerName } from './protocol.ts';

export interface PeerSpec {
  name: PeerName;
  label: string;
  /** What it keeps of the trip, for the table. */
  state: string;
  /** The packages whose versions the report names. */
  packages: string[];
}

export const SPECS: Record<PeerName, PeerSpec> = {
  archety: {
    name: 'archety',
    label: 'Archety',
    state: 'durable: each edit committed to PostgreSQL before its broadcast',
    packages: ['uWebSockets.js', 'pg'],
  },
  raw: {
    name: 'raw',
    label: 'raw uWebSockets.js (limit)',
    state: 'none: relays frames, no parsing, no auth',
    packages: ['uWebSockets.js'],
  },
  socketio: {
    name: 'socketio',
    label: 'Socket.IO',
    state: 'memory only',
    packages: ['socket.io', 'socket.io-client'],
  },
  colyseus: {
    name: 'colyseus',
    label: 'Colyseus',
    state: 'memory only (plain object in the room)',
    packages: ['@colyseus/core', '@colyseus/ws-transport', '@colyseus/sdk'],
  },
  hocuspocus: {
    name: 'hocuspocus',
    label: 'Hocuspocus',
    state: 'memory only (Y.Doc, no extension)',
    packages: ['@hocuspocus/server', '@hocuspocus/provider', 'yjs'],
  },
};

/** The command that installs the peers' packages, for messages. */
export const PEERS_INSTALL_COMMAND = 'npm ci --prefix bench/peers';

/**
 * Where packages are looked up, in Node's order for a file in bench/peers/: the peers' own
 * install (bench/peers/package.json, apart from the root's because several declare Node ≥ 22),
 * then the root's, which holds Archety's (uWebSockets.js, pg).
 */
const MODULE_DIRS = [path.join(repoRoot, 'bench/peers/node_modules'), path.join(repoRoot, 'node_modules')];

function readManifest(name: string): { name: string; version: string } | undefined {
  for (const dir of MODULE_DIRS) {
    const file = path.join(dir, name, 'package.json');
    if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  }
  return undefined;
}

/** The packages the given servers need that are not installed. */
export function missingPackages(peers: PeerName[]): string[] {
  return peers.flatMap((p) => SPECS[p].packages).filter((name) => !readManifest(name));
}

/** `name@version` of each package, as installed. */
export function packageVersions(names: string[]): string[] {
  return names.map((n) => {
    const pkg = readManifest(n);
    if (!pkg) throw new Error(`${n} is not installed: run ${PEERS_INSTALL_COMMAND}`);
    return `${n}@${pkg.version}${pkg.name !== n ? ` (${pkg.name})` : ''}`;
  });
}

export interface StartOptions {
  core: number | null;
  fileLimit: number;
  jwtSecret: string;
  databaseUrl: string;
  /** Extra Node flags for the server (diagnostics, e.g. `--cpu-prof`). */
  nodeFlags: string[];
}

/** Starts `name`'s server and resolves once it listens. */
export function startPeer(name: PeerName, o: StartOptions): Promise<ServerProcess> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/tmp',
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: '0',
    JWT_SECRET: o.jwtSecret,
  };
  const tsx = (file: string) => [process.execPath, ...o.nodeFlags, '--import', 'tsx', file];
  const common = { env, core: o.core, fileLimit: o.fileLimit, timeoutMs: 60_000 };
  switch (name) {
    case 'archety':
      return startServerProcess({
        ...common,
        name: 'archety',
        command: [process.execPath, ...o.nodeFlags, 'bin/archety.js', 'start'],
        env: {
          ...env,
          DATABASE_URL: o.databaseUrl,
          ...MINIAPP_BENCH_SERVER_ENV,
          // Diagnostics: BENCH_ARCHETY_ENV="GROUP_COMMIT_LANES=1 PG_POOL_MAX=12" adds to its environment.
          ...Object.fromEntries(
            (process.env.BENCH_ARCHETY_ENV ?? '')
              .split(/\s+/)
              .filter((kv) => kv.includes('='))
              .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
          ),
        },
        ready: /archety listening on (http:\/\/[^ "]+)/,
      });
    case 'raw':
      return startServerProcess({
        ...common,
        name: 'raw relay',
        command: tsx('bench/rawRelay.ts'),
        ready: /raw relay listening on (http:\/\/\S+)/,
      });
    case 'socketio':
      return startServerProcess({
        ...common,
        name: 'socket.io',
        command: tsx('bench/peers/socketio/server.ts'),
        ready: /socket\.io listening on (http:\/\/\S+)/,
      });
    case 'colyseus':
      return startServerProcess({
        ...common,
        name: 'colyseus',
        command: tsx('bench/peers/colyseus/server.ts'),
        ready: /colyseus listening on (http:\/\/\S+)/,
      });
    case 'hocuspocus':
      return startServerProcess({
        ...common,
        name: 'hocuspocus',
        command: tsx('bench/peers/hocuspocus/server.ts'),
        ready: /hocuspocus listening on (http:\/\/\S+)/,
      });
  }
}
