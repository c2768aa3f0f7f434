/**
 * Group reads: concurrent reads of one kind (many conversations activating or answering at
 * once) share one statement, the way writes share a group commit. A request waits while
 * `inFlight` statements of its kind run and goes out with the others that queued meanwhile
 * (up to `maxBatch`), so under load one round trip serves dozens of requests, and a lone
 * request goes out at once. The statement answers each request in order; a failed statement
 * fails every request it carried (and nothing else).
 */

export interface BatchedReadsOptions {
  /** Requests in one statement at most. */
  maxBatch: number;
  /** Statements in flight at most; requests arriving meanwhile wait and go together. */
  inFlight: number;
}

interface Pending<Q, R> {
  request: Q;
  resolve: (result: R) => void;
  reject: (err: unknown) => void;
}

export class BatchedReads<Q, R> {
  private pending: Pending<Q, R>[] = [];
  private running = 0;

  /** `read` answers every request of a batch, one result per request, in order. */
  constructor(
    private readonly read: (requests: Q[]) => Promise<R[]>,
    private readonly options: BatchedReadsOptions = { maxBatch: 128, inFlight: 2 },
  ) {}

  get(request: Q): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.pending.push({ request, resolve, reject });
      this.flush();
    });
  }

  private flush(): void {
    while (this.running < this.options.inFlight && this.pending.length > 0) {
      const batch = this.pending.splice(0, this.options.maxBatch);
      this.running++;
      this.run(batch).finally(() => {
        this.running--;
        this.flush();
      });
    }
  }

  private async run(batch: Pending<Q, R>[]): Promise<void> {
    let results: R[];
    try {
      results = await this.read(batch.map((p) => p.request));
      if (results.length !== batch.length)
        throw new Error(`a batched read answered ${results.length} of ${batch.length}`);
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    for (let i = 0; i < batch.length; i++) batch[i].resolve(results[i]);
  }
}
