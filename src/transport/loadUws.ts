/**
 * Loads uWebSockets.js' native binary. The package silently falls back to a slow pure-JS
 * server when the binary does not load (another Node ABI, another libc); we refuse to start
 * on the fallback unless ALLOW_UWS_FALLBACK=1.
 */
import { createRequire } from 'node:module';
import path from 'node:path';

export type Uws = typeof import('uWebSockets.js');

const require = createRequire(import.meta.url);

export interface LoadedUws {
  uws: Uws;
  native: boolean;
  /** Why the native binary did not load. */
  reason?: string;
}

export function loadUws(allowFallback: boolean): LoadedUws {
  const packageDir = path.dirname(require.resolve('uWebSockets.js/package.json'));
  const binary = path.join(
    packageDir,
    'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
  );
  try {
    return { uws: require(binary) as Uws, native: true };
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    if (!allowFallback) {
      throw new Error(
        `uWebSockets.js has no native binary for Node ${process.version} on ${process.platform}-${process.arch} (${reason}); ` +
          'refusing the slow pure-JS fallback. Set ALLOW_UWS_FALLBACK=1 to run on it anyway.',
      );
    }
    return { uws: require(path.join(packageDir, 'dist', 'index.js')) as Uws, native: false, reason };
  }
}
