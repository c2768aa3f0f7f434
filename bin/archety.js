#!/usr/bin/env -S node --max-semi-space-size=32
// The `archety` command. The server is TypeScript run through tsx's loader (no build step);
// tsx is resolved from this package, so the command works from any directory. The young
// generation is given 32 MiB semi-spaces, as `npm start` does (docs/operations.md, "Young generation").
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
