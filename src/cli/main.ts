/**
 * `archety <command>`: start, migrate, token, relay-sim, cluster, integrations, vault, help. With no command it
 * prints the help, like every CLI (`npm start` passes `start`). Errors a person can fix
 * (configuration, a data directory in use) are one line on stderr; anything else keeps its stack.
 */
import { ConfigError } from '../config.ts';
import { DataDirInUseError } from '../store/dataDirLock.ts';

const HELP = `archety — the Archety server (Sage's conversations and collaborative miniapps)

Usage: archety <command> [options]

Commands:
  start                 Start the server (\`npm start\`). With no DATABASE_URL it starts an
                        embedded PostgreSQL with its data under DATA_DIR (default ./.data);
                        one server per DATA_DIR.
  migrate               Apply the database migrations in sql/ and exit.
  token --sub <id>      Mint a token for the server's secret (JWT_SECRET, or the one a
        [--role user|relay|admin] [--sid <session>] [--ttl 1h]
                        server created in DATA_DIR) and print it.
  relay-sim             Talk to Sage in the terminal: a relay on /v1/relay that sends what
        [--url <server>] [--as +15550000001] [--token <jwt>] [--persona sage]
                        you type (/as, /direct, /group, /photo, /reply, /help, /quit) and
                        prints Sage's replies. \`archety relay-sim --help\` says more.
  cluster               Start a local cluster: N \`archety start\` processes on consecutive
        [--nodes 3] [--port 8080]
                        ports sharing DATABASE_URL and REDIS_URL (\`npm run cluster\`).
  integrations          List the OAuth integrations per user (provider, status, scopes,
        [--user <id>] [--json]
                        expiry); never a token. \`archety integrations --help\` says more.
  vault rotate          Re-encrypt every stored OAuth token under the first key of
                        VAULT_KEYS; \`archety vault generate-key\` prints a new key.
  help, --help          Show this help (also what \`archety\` alone does).

Configuration comes from the environment; see the README's table (PORT, HOST,
DATABASE_URL, DATA_DIR, JWT_SECRET, …). Examples:
  npm start
  DATABASE_URL=postgres://localhost/archety JWT_SECRET=… archety start
  archety token --sub +15551234567 --ttl 2h
  npm run token -- --sub +15551234567 --sid ms_abc
  npx archety relay-sim --as +15551234567
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  switch (command) {
    // Each command loads what it needs, when it runs: `--help` or `token` do not load the server.
    case 'start':
      return (await import('./startCommand.ts')).runStart(rest);
    case 'migrate':
      return (await import('./migrateCommand.ts')).runMigrate(rest);
    case 'token':
      return (await import('./tokenCommand.ts')).runToken(rest);
    case 'relay-sim':
      return (await import('./relaySimCommand.ts')).runRelaySim(rest);
    case 'cluster':
      return (await import('./clusterCommand.ts')).runCluster(rest);
    case 'integrations':
      return (await import('./integrationsCommand.ts')).runIntegrations(rest);
    case 'vault':
      return (await import('./vaultCommand.ts')).runVault(rest);
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return 0;
    default:
      process.stderr.write(`archety: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

function oneLine(err: unknown): err is Error {
  return (
    err instanceof ConfigError ||
    err instanceof DataDirInUseError ||
    (err as { code?: string })?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION'
  );
}

// A failed command exits at once: a start that failed halfway may hold open what it had
// opened (a pool, the embedded PostgreSQL), and would otherwise never end. The 'exit'
// listeners still release the data directory and stop the embedded PostgreSQL.
main(process.argv.slice(2)).then(
  (code) => {
    if (code === 0) process.exitCode = 0;
    else if (code !== -1) process.exit(code);
  },
  (err) => {
    process.stderr.write(`archety: ${oneLine(err) ? err.message : (err?.stack ?? err)}\n`);
    process.exit(1);
  },
);
