/**
 * `archety token`: mints a token for the server's secret. It only reads that secret
 * (JWT_SECRET, or DATA_DIR/jwt-secret created by a server): one it invented would sign
 * tokens the server refuses, so without one it fails saying where it looked.
 */
import { type JwtKey, MissingJwtSecretError, resolveJwtKey } from '../auth/jwtKey.ts';
import { mintToken, parseTtl } from '../auth/mintToken.ts';
import { loadConfig } from '../config.ts';
import { options } from './args.ts';

const HELP = `Usage: archety token --sub <user id> [--role user|relay|admin] [--sid <session id>] [--ttl 1h]

Prints a JWT signed with JWT_SECRET or, without it, with the secret the server created in
DATA_DIR (default ./.data, relative to the current directory) on its first start.
  --sub   the user id; for people, their phone number in E.164 (+15551234567)
  --role  user (default), relay or admin
  --sid   limit the token to this one miniapp session
  --ttl   lifetime: 90s, 15m, 1h (default), 7d
`;

export async function runToken(args: string[]): Promise<number> {
  const o = options(args, {
    sub: { type: 'string' },
    role: { type: 'string', default: 'user' },
    sid: { type: 'string' },
    ttl: { type: 'string', default: '1h' },
  });
  if (o.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (typeof o.sub !== 'string' || !o.sub) {
    process.stderr.write(`archety token: --sub is required\n\n${HELP}`);
    return 2;
  }
  const role = o.role as string;
  if (!['user', 'relay', 'admin'].includes(role)) {
    process.stderr.write(`archety token: --role must be user, relay or admin\n`);
    return 2;
  }
  const config = loadConfig();
  let key: JwtKey;
  try {
    key = await resolveJwtKey(config, { create: false });
  } catch (err) {
    if (!(err instanceof MissingJwtSecretError)) throw err;
    process.stderr.write(
      `archety token: ${err.message}; start the server once with this DATA_DIR (it creates the secret), or set JWT_SECRET, or DATA_DIR to the server's data directory\n`,
    );
    return 1;
  }
  if (!('secret' in key)) {
    process.stderr.write(
      'archety token: tokens are verified with JWT_JWKS_URL; mint them with your identity provider\n',
    );
    return 1;
  }
  const token = await mintToken({
    secret: key.secret,
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
    sub: o.sub,
    role: role as 'user' | 'relay' | 'admin',
    sid: typeof o.sid === 'string' ? o.sid : undefined,
    ttlS: parseTtl(o.ttl as string),
  });
  process.stdout.write(`${token}\n`);
  return 0;
}
