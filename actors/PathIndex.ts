/**
 * Which paths a session's recent ops touched, as a tree of path segments: it tells an incoming
 * op that nothing since its base can conflict with it by walking the op's own path, however
 * stale the base is. Without it, every op listed the ops since its base and compared paths
 * with each, so an op cost more the further behind its sender was (see bench/README.md).
 *
 * The answer is conservative: `clear` is true only when no op after the base, from another
 * socket (or from the same socket, sent after it), touched an overlapping path. When it is
 * false the caller lists the ops and checks each, as before, and builds the `conflict` frame.
 * Overlap is `overlaps` of `ops.ts`: one path a prefix of the other, an index and an id in the
 * same array taken to name the same item.
 */
import type { Path, PathSegment } from './ops.ts';

/** The newest op of a set, its socket and that socket's highest `seq`, and the newest op by any other socket. */
class Newest {
  version = -1;
  conn: string | undefined = undefined;
  /** Highest `seq` among `conn`'s ops since the last op of another socket. */
  seq = Number.NEGATIVE_INFINITY;
  /** The newest version by a socket other than `conn`. */
  other = -1;

  add(version: number, conn: string | undefined, seq: number | undefined): void {
    if (conn !== this.conn) {
      this.other = this.version;
      this.conn = conn;
      this.seq = Number.NEGATIVE_INFINITY;
    }
    this.version = version;
    if (seq !== undefined && seq > this.seq) this.seq = seq;
  }

  /**
   * Whether an op after `base` may be here that is not an earlier op of the asking socket
   * (`conn`, `seq`): the rule of `sameSocketBefore` in miniappSession.ts, answered from the
   * newest ops alone and erring towards "may".
   */
  mayClash(base: number, conn: string | undefined, seq: number | undefined): boolean {
    if (this.version <= base) return false;
    if (conn === undefined || this.conn !== conn) return true;
    if (this.other > base) return true;
    return seq !== undefined && this.seq >= seq;
  }
}

class PathNode {
  /** Ops whose touched path ends here. */
  here: Newest | undefined = undefined;
  /** Ops whose touched path ends here or below. */
  readonly below = new Newest();
  fields: Map<string, PathNode> | undefined = undefined;
  indexes: Map<number, PathNode> | undefined = undefined;
  ids: Map<string, PathNode> | undefined = undefined;
}

export class PathIndex {
  private root = new PathNode();

  /** Records an op (versions only ever grow). */
  add(touched: Path, version: number, conn: string | undefined, seq: number | undefined): void {
    let node = this.root;
    node.below.add(version, conn, seq);
    for (const seg of touched) {
      node = childAlong(node, seg);
      node.below.add(version, conn, seq);
    }
    node.here ??= new Newest();
    node.here.add(version, conn, seq);
  }

  /** Drops the paths whose every op is older than `before` (ops the log no longer holds). */
  prune(before: number): void {
    if (this.root.below.version < before) this.root = new PathNode();
    else pruneBelow(this.root, before);
  }

  /** True when no op recorded after `base` may conflict with an op claiming `claimed` (see the file's comment). */
  clear(claimed: Path, base: number, conn: string | undefined, seq: number | undefined): boolean {
    return !mayClashAt(this.root, claimed, 0, base, conn, seq);
  }

  /** Nodes held, for tests (the index must not outgrow the log). */
  get size(): number {
    return count(this.root);
  }
}

function mayClashAt(
  node: PathNode,
  claimed: Path,
  depth: number,
  base: number,
  conn: string | undefined,
  seq: number | undefined,
): boolean {
  if (node.below.version <= base) return false;
  // The claimed path ends here: any op at or below overlaps it.
  if (depth === claimed.length) return node.below.mayClash(base, conn, seq);
  // An op that touched this prefix of the claimed path overlaps it.
  if (node.here?.mayClash(base, conn, seq)) return true;
  const seg = claimed[depth];
  const d = depth + 1;
  if (typeof seg === 'string') {
    const child = node.fields?.get(seg);
    return child !== undefined && mayClashAt(child, claimed, d, base, conn, seq);
  }
  // An index and an id in the same array may name the same item.
  const same = typeof seg === 'number' ? node.indexes?.get(seg) : node.ids?.get(seg.id);
  if (same !== undefined && mayClashAt(same, claimed, d, base, conn, seq)) return true;
  const others = typeof seg === 'number' ? node.ids : node.indexes;
  if (others) for (const child of others.values()) if (mayClashAt(child, claimed, d, base, conn, seq)) return true;
  return false;
}

/** The child of `node` along `seg`, made when missing. */
function childAlong(node: PathNode, seg: PathSegment): PathNode {
  if (typeof seg === 'string') {
    node.fields ??= new Map();
    return childOf(node.fields, seg);
  }
  if (typeof seg === 'number') {
    node.indexes ??= new Map();
    return childOf(node.indexes, seg);
  }
  node.ids ??= new Map();
  return childOf(node.ids, seg.id);
}

function childOf<K>(children: Map<K, PathNode>, key: K): PathNode {
  let child = children.get(key);
  if (!child) {
    child = new PathNode();
    children.set(key, child);
  }
  return child;
}

function pruneBelow(node: PathNode, before: number): void {
  pruneChildren(node.fields, before);
  pruneChildren(node.indexes, before);
  pruneChildren(node.ids, before);
}

function pruneChildren<K>(children: Map<K, PathNode> | undefined, before: number): void {
  if (!children) return;
  for (const [key, child] of children) {
    if (child.below.version < before) children.delete(key);
    else pruneBelow(child, before);
  }
}

function count(node: PathNode): number {
  let n = 1;
  for (const children of [node.fields, node.indexes, node.ids]) {
    if (children) for (const child of children.values()) n += count(child);
  }
  return n;
}
