/**
 * The trip-planner page served at `GET /miniapp/:id`: static HTML plus one script, the
 * browser build of `page.ts` and the client SDK. The script is bundled in memory by esbuild
 * the first time it is asked for (a few tens of ms), so nothing needs building before
 * `npm start` and no generated file is committed.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface MiniappPage {
  html: string;
  /** The bundled script (ES2020, one file). */
  script(): Promise<string>;
}

const here = path.dirname(fileURLToPath(import.meta.url));

export async function loadMiniappPage(): Promise<MiniappPage> {
  const html = await readFile(path.join(here, 'miniapp.html'), 'utf8');
  let bundle: Promise<string> | undefined;
  return {
    html,
    script() {
      bundle ??= import('esbuild').then(async (esbuild) => {
        const result = await esbuild.build({
          entryPoints: [path.join(here, 'page.ts')],
          bundle: true,
          write: false,
          format: 'iife',
          target: 'es2020',
          minify: true,
          legalComments: 'none',
        });
        return result.outputFiles[0].text;
      });
      return bundle;
    },
  };
}
