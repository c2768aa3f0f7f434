/** The trip planner: the first miniapp. Its schema is docs/protocol.md's `trip-planner` state. */
import { hhmm, idSchema, isoDate, type ObjectSchema, type Schema } from '../schema.ts';
import type { MiniappApp } from './MiniappApp.ts';

const isoDateOrNull: Schema = { kind: 'string', max: 10, format: isoDate, nullable: true };

const dates: ObjectSchema = {
  kind: 'object',
  nullable: true,
  fields: { start: { schema: isoDateOrNull }, end: { schema: isoDateOrNull } },
  refine: (d) =>
    typeof d.start === 'string' && typeof d.end === 'string' && d.start > d.end
      ? 'dates.start must not be after dates.end'
      : null,
};

const item: ObjectSchema = {
  kind: 'object',
  fields: {
    id: { schema: idSchema },
    time: { schema: { kind: 'string', max: 5, format: hhmm, nullable: true }, optional: true },
    title: { schema: { kind: 'string', min: 1, max: 200 } },
    notes: { schema: { kind: 'string', max: 2000 }, optional: true },
  },
};

const day: ObjectSchema = {
  kind: 'object',
  fields: {
    id: { schema: idSchema },
    date: { schema: isoDateOrNull, optional: true },
    items: { schema: { kind: 'array', items: item, max: 200, keyed: true } },
  },
};

const budgetItem: ObjectSchema = {
  kind: 'object',
  fields: {
    id: { schema: idSchema },
    label: { schema: { kind: 'string', min: 1, max: 200 } },
    amount: { schema: { kind: 'number', min: 0 } },
  },
};

export const tripPlannerSchema: ObjectSchema = {
  kind: 'object',
  fields: {
    title: { schema: { kind: 'string', min: 1, max: 200 } },
    dates: { schema: dates },
    members: { schema: { kind: 'array', items: { kind: 'string', min: 1, max: 200 }, max: 100 } },
    days: { schema: { kind: 'array', items: day, max: 366, keyed: true } },
    budget: {
      schema: {
        kind: 'object',
        fields: {
          currency: {
            schema: {
              kind: 'string',
              max: 3,
              format: { test: (v) => /^[A-Z]{3}$/.test(v), name: 'three capital letters' },
            },
          },
          items: { schema: { kind: 'array', items: budgetItem, max: 1000, keyed: true } },
        },
      },
    },
  },
};

export interface TripPlannerState {
  title: string;
  dates: { start: string | null; end: string | null } | null;
  members: string[];
  days: {
    id: string;
    date?: string | null;
    items: { id: string; time?: string | null; title: string; notes?: string }[];
  }[];
  budget: { currency: string; items: { id: string; label: string; amount: number }[] };
}

export const tripPlanner: MiniappApp<TripPlannerState> = {
  name: 'trip-planner',
  schema: tripPlannerSchema,
  initialState: ({ title }) => ({
    title: title ?? 'New trip',
    dates: { start: null, end: null },
    members: [],
    days: [],
    budget: { currency: 'USD', items: [] },
  }),
};
