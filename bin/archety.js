#!/usr/bin/env node
// The `archety` command. The server is TypeScript run through tsx's loader (no build step);
// tsx is resolved from this package, so the command works from any directory.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
