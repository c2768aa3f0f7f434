import type { MiniappApp } from './MiniappApp.ts';
import { tripPlanner } from './tripPlanner.ts';

/** Every miniapp the server can host, by name. */
export const miniapps: ReadonlyMap<string, MiniappApp> = new Map([[tripPlanner.name, tripPlanner as MiniappApp]]);

export type { MiniappApp };
