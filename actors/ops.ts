/**
 * JSON edits on a miniapp's state (docs/protocol.md, "Ops"), applied immutably with structural
 * sharing, checked against the app's schema where they land, and the paths they touch for
 * field-level optimistic locking. Shared by the server's actor and the client SDK, so both
 * replay ops to the same state.
 */
import { type ArraySchema, type Issue, isPlainObject, keyOf, type Schema, validate } from './schema.ts';
import { isWellFormedJson, TEXT_RULE } from './text.ts';

export type PathSegment = string | number | { id: string };
export type Path = PathSegment[];

export type Op =
  | { kind: 'set'; path: Path; value: unknown }
  | { kind: 'insert'; path: Path; index?: number; value: unknown }
  | { kind: 'remove'; path: Path };

export type ApplyResult = { ok: true; state: unknown; touched: Path } | { ok: false; message: string };

/** Where one segment leads inside a container, and the schema of what is there. */
interface Step {
  container: unknown;
  schema: Schema;
  /** Object key or array index. */
  at: string | number;
  /** The same segment with array items that carry an id addressed by id. */
  stable: PathSegment;
  child: unknown;
  childSchema: Schema;
  /** The object field may be absent. */
  optional: boolean;
}

class OpError extends Error {}

function describe(path: Path): string {
  return path.length === 0
    ? 'the state'
    : path.map((s) => (typeof s === 'object' ? `{id:${JSON.stringify(s.id)}}` : String(s))).join('.');
}

function fail(message: string): never {
  throw new OpError(message);
}

/** Resolves one segment inside `container`; `mustExist` false allows a missing optional field. */
function step(container: unknown, schema: Schema, seg: PathSegment, mustExist: boolean): Step {
  if (container === null) fail('cannot edit inside null');
  if (schema.kind === 'object') {
    if (typeof seg !== 'string') fail(`expected a field name, got ${JSON.stringify(seg)}`);
    const field = Object.hasOwn(schema.fields, seg) ? schema.fields[seg] : undefined;
    if (!field) fail(`"${seg}" is not a field here`);
    const obj = container as Record<string, unknown>;
    if (mustExist && !Object.hasOwn(obj, seg)) fail(`"${seg}" is not set`);
    return {
      container,
      schema,
      at: seg,
      stable: seg,
      child: obj[seg],
      childSchema: field.schema,
      optional: field.optional === true,
    };
  }
  if (schema.kind === 'array') {
    const arr = container as unknown[];
    let index: number;
    if (typeof seg === 'number') {
      index = seg;
      if (!Number.isInteger(index) || index < 0 || index >= arr.length) fail(`index ${seg} is out of range`);
    } else if (isPlainObject(seg) && typeof seg.id === 'string') {
      if (!schema.keyed) fail('items of this array have no id; address them by index');
      index = arr.findIndex((item) => keyOf(item) === seg.id);
      if (index < 0) fail(`no item with id "${seg.id}"`);
    } else {
      fail(`expected an index or {id}, got ${JSON.stringify(seg)}`);
    }
    const child = arr[index];
    // An item addressed by its id keeps the op's own segment (a logged op holds one, not two).
    const stable: PathSegment = schema.keyed ? (typeof seg === 'object' ? seg : { id: keyOf(child) as string }) : index;
    return { container, schema, at: index, stable, child, childSchema: schema.items, optional: false };
  }
  fail(`cannot go inside a ${schema.kind}`);
}

/** Walks `path` from the root, returning one step per segment. */
function walk(root: unknown, rootSchema: Schema, path: Path): Step[] {
  const steps: Step[] = [];
  let node = root;
  let schema = rootSchema;
  for (const seg of path) {
    const s = step(node, schema, seg, true);
    steps.push(s);
    node = s.child;
    schema = s.childSchema;
  }
  return steps;
}

/** Replaces the node that `steps` lead to with `value`, copying every container above it. */
function replaceAlong(steps: Step[], value: unknown): unknown {
  let next = value;
  for (let i = steps.length - 1; i >= 0; i--) next = withChild(steps[i].container, steps[i].at, next);
  return next;
}

function withChild(container: unknown, at: string | number, child: unknown): unknown {
  if (Array.isArray(container)) {
    const copy = container.slice();
    copy[at as number] = child;
    return copy;
  }
  return { ...(container as Record<string, unknown>), [at]: child };
}

function checkValue(schema: Schema, value: unknown, path: Path): void {
  const issue: Issue | null = validate(schema, value);
  if (issue) {
    const where = issue.path.length ? `${describe(path)}.${issue.path.join('.')}` : describe(path);
    fail(`${where} ${issue.message}`);
  }
}

/** Whether any object from the root down to `containerPath` has a cross-field rule (schemas only: no allocation). */
function refinedAlong(rootSchema: Schema, containerPath: Path): boolean {
  let schema: Schema | undefined = rootSchema;
  for (let i = 0; schema; i++) {
    if (schema.kind === 'object' && schema.refine) return true;
    if (i === containerPath.length) return false;
    const seg = containerPath[i];
    if (schema.kind === 'object') schema = typeof seg === 'string' ? schema.fields[seg]?.schema : undefined;
    else schema = schema.kind === 'array' ? schema.items : undefined;
  }
  return false;
}

/** Cross-field rules of every object from the root down to the edited container. */
function checkRefinements(root: unknown, rootSchema: Schema, containerPath: Path): void {
  if (!refinedAlong(rootSchema, containerPath)) return;
  let node = root;
  let schema = rootSchema;
  const check = () => {
    if (schema.kind === 'object' && schema.refine && node !== null) {
      const message = schema.refine(node as Record<string, unknown>);
      if (message) fail(message);
    }
  };
  check();
  for (const seg of containerPath) {
    const s = step(node, schema, seg, true);
    node = s.child;
    schema = s.childSchema;
    check();
  }
}

function assertUniqueId(schema: ArraySchema, arr: unknown[], value: unknown, exceptIndex: number): void {
  if (!schema.keyed) return;
  const id = keyOf(value);
  if (id === null) fail('the item needs an "id"');
  for (let i = 0; i < arr.length; i++) {
    if (i !== exceptIndex && keyOf(arr[i]) === id) fail(`an item with id "${id}" already exists`);
  }
}

/**
 * `path` and one more segment, at its exact size: a touched path is kept as long as its op is
 * logged, and an array spread (`[...path, seg]`) leaves room to grow, over twice the memory.
 */
function extended(path: Path, seg: PathSegment): Path {
  return path.concat([seg]);
}

/**
 * The op's own `path` when `touched` names the same segments (fields, items addressed by id:
 * the usual edit), so that a logged op keeps one array and not two equal ones; otherwise
 * `touched`. Also for ops read back from the store, whose two paths are parsed apart.
 */
export function sharedWith(path: Path, touched: Path): Path {
  if (touched.length !== path.length) return touched;
  for (let i = 0; i < path.length; i++) {
    const a = path[i];
    const b = touched[i];
    if (a !== b && !(typeof a === 'object' && typeof b === 'object' && a.id === b.id)) return touched;
  }
  return path;
}

function applyUnchecked(schema: Schema, state: unknown, op: Op): { state: unknown; touched: Path } {
  // Before anything else: a bad path segment or object key would otherwise be echoed in a message.
  if (!isWellFormedJson(op.path)) fail(`every path segment ${TEXT_RULE}`);
  if (op.kind !== 'remove' && !isWellFormedJson(op.value)) fail(`every string and key of the value ${TEXT_RULE}`);
  if (op.kind === 'insert') {
    const steps = walk(state, schema, op.path);
    const target = steps.length ? steps[steps.length - 1].child : state;
    const targetSchema = steps.length ? steps[steps.length - 1].childSchema : schema;
    if (targetSchema.kind !== 'array' || !Array.isArray(target)) fail(`${describe(op.path)} is not an array`);
    const index = op.index ?? target.length;
    if (!Number.isInteger(index) || index < 0 || index > target.length) {
      fail(`index ${op.index} is out of range 0…${target.length}`);
    }
    if (target.length + 1 > targetSchema.max) fail(`${describe(op.path)} can hold at most ${targetSchema.max} items`);
    checkValue(targetSchema.items, op.value, [...op.path, index]);
    assertUniqueId(targetSchema, target, op.value, -1);
    const next = target.slice();
    next.splice(index, 0, op.value);
    const arrayPath = steps.map((s) => s.stable);
    const touched = targetSchema.keyed ? extended(arrayPath, { id: keyOf(op.value) as string }) : arrayPath;
    const newState = replaceAlong(steps, next);
    checkRefinements(newState, schema, op.path);
    return { state: newState, touched };
  }

  if (op.path.length === 0) fail('the path must not be empty');
  const parentSteps = walk(state, schema, op.path.slice(0, -1));
  const parent = parentSteps.length ? parentSteps[parentSteps.length - 1].child : state;
  const parentSchema = parentSteps.length ? parentSteps[parentSteps.length - 1].childSchema : schema;
  const last = op.path[op.path.length - 1];
  const s = step(parent, parentSchema, last, op.kind === 'remove');
  const stableParent = parentSteps.map((p) => p.stable);

  let newParent: unknown;
  let touched: Path;
  // The array holding the edited object: an item keeps its id, or ids could clash.
  const holder = parentSteps.at(-1)?.schema;
  if (op.kind === 'set' && last === 'id' && holder?.kind === 'array' && holder.keyed) {
    fail('an item keeps its "id"; remove it and insert a new one instead');
  }
  if (op.kind === 'set') {
    checkValue(s.childSchema, op.value, op.path);
    if (parentSchema.kind === 'array') {
      const arr = parent as unknown[];
      if (parentSchema.keyed && keyOf(op.value) !== keyOf(arr[s.at as number])) {
        fail('an item keeps its "id"; remove it and insert a new one instead');
      }
      assertUniqueId(parentSchema, arr, op.value, s.at as number);
    }
    newParent = withChild(parent, s.at, op.value);
    touched = extended(stableParent, s.stable);
  } else {
    if (parentSchema.kind === 'object') {
      if (!s.optional) fail(`${describe(op.path)} is required and cannot be removed`);
      const copy = { ...(parent as Record<string, unknown>) };
      delete copy[s.at as string];
      newParent = copy;
      touched = extended(stableParent, s.stable);
    } else {
      const copy = (parent as unknown[]).slice();
      copy.splice(s.at as number, 1);
      newParent = copy;
      // Removing a plain value shifts every later index: the whole array is touched.
      touched = (parentSchema as ArraySchema).keyed ? extended(stableParent, s.stable) : stableParent;
    }
  }
  const newState = replaceAlong(parentSteps, newParent);
  checkRefinements(newState, schema, op.path.slice(0, -1));
  return { state: newState, touched: sharedWith(op.path, touched) };
}

/**
 * Applies `op` to `state` without mutating it. The result is valid for `schema` whenever
 * `state` was; otherwise the op is refused with a message saying why.
 */
export function applyOp(schema: Schema, state: unknown, op: Op): ApplyResult {
  try {
    const { state: next, touched } = applyUnchecked(schema, state, op);
    return { ok: true, state: next, touched };
  } catch (err) {
    if (err instanceof OpError) return { ok: false, message: err.message };
    throw err;
  }
}

/**
 * What an op touches, judged from the op and the schema alone (its indexes are relative to
 * the sender's base version, so they are not translated to ids): used to check an incoming
 * op against ops applied since its base version.
 */
export function claimedPath(schema: Schema, op: Op): Path {
  const containerSchema = schemaAt(schema, op.kind === 'insert' ? op.path : op.path.slice(0, -1));
  if (op.kind === 'insert') {
    if (containerSchema?.kind === 'array' && containerSchema.keyed) {
      const id = keyOf(op.value);
      if (id !== null) return [...op.path, { id }];
    }
    return op.path;
  }
  if (op.kind === 'remove' && containerSchema?.kind === 'array' && !containerSchema.keyed) {
    return op.path.slice(0, -1);
  }
  return op.path;
}

/** The schema at `path`, following field names and array items; undefined when it leads nowhere. */
export function schemaAt(schema: Schema, path: Path): Schema | undefined {
  let node: Schema | undefined = schema;
  for (const seg of path) {
    if (!node) return undefined;
    if (node.kind === 'object') node = typeof seg === 'string' ? node.fields[seg]?.schema : undefined;
    else if (node.kind === 'array') node = node.items;
    else return undefined;
  }
  return node;
}

function segmentsMayMatch(a: PathSegment, b: PathSegment): boolean {
  if (typeof a === 'object' && typeof b === 'object') return a.id === b.id;
  // An index and an id in the same array may name the same item: assume they do.
  if (typeof a === 'object') return typeof b === 'number';
  if (typeof b === 'object') return typeof a === 'number';
  return a === b;
}

/** True when one path is a prefix of the other (segment by segment). */
export function overlaps(a: Path, b: Path): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (!segmentsMayMatch(a[i], b[i])) return false;
  }
  return true;
}
