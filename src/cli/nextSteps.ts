/**
 * What to do after a first `npm start`: mint a token, create a trip, open its page. Printed
 * once, after the summary line, for a person at a terminal running the embedded default
 * (never in JSON logs, where a machine reads stdout).
 */

export interface NextStepsInput {
  url: string;
  /** Set when the server uses JWT_SECRET: the token command needs the same one. */
  jwtSecretSet: boolean;
  /** The DATA_DIR variable as given, when given: the token command must read the same directory. */
  dataDirEnv: string | undefined;
  /** Started through `npm start` (npm_lifecycle_event): suggest `npm run token`, else `npx archety token`. */
  viaNpm: boolean;
}

/** Quotes `value` for a POSIX shell when it needs it. */
function shellWord(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;
}

export function nextSteps(input: NextStepsInput): string {
  const env = [
    input.dataDirEnv !== undefined ? `DATA_DIR=${shellWord(input.dataDirEnv)} ` : '',
    input.jwtSecretSet ? 'JWT_SECRET=<the server’s> ' : '',
  ].join('');
  const mint = input.viaNpm ? 'npm run --silent token --' : 'npx archety token';
  return [
    'next steps: mint a token, create a trip, open it in two windows',
    `  TOKEN=$(${env}${mint} --sub +15551234567)`,
    `  curl -s -X POST ${input.url}/v1/miniapps -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"app":"trip-planner","title":"Lisbon"}'`,
    `  open ${input.url}/miniapp/<the id above>#token=$TOKEN`,
    '',
  ].join('\n');
}
