// Exact reduction: per-micro-batch gradient sums added in micro-batch-id order into a float64
// accumulator, then divided by the sample count. The star reducer runs it over the whole vector
// on the coordinator; a shard owner would run it over its shard. Either way N workers give 1
// worker's bits.

/**
 * Sums one step's per-micro-batch gradient sums in micro-batch-id order in float64 and returns
 * the float32 mean, so the result does not depend on arrival order or on which worker computed
 * what. Replies are folded as soon as their turn in id order comes, so reduction overlaps with waiting
 * for the rest. All memory is allocated once. The first reply in id order is only held (a received
 * reply is never overwritten) and is added to the second in the second's pass, which writes the
 * float64 accumulator: no copy or zero-fill pass. Middle replies are added; the last is added,
 * scaled, rounded to float32 and squared in the same pass. K replies take K - 1 passes (one for
 * two replies, or one for a single reply).
 */
export class OrderedSum {
  private readonly accumulator: Float64Array;
  private readonly mean: Float32Array;
  private order: number[] = [];
  private next = 0;
  private samples = 0;
  private sqNorm = 0;
  /** The first reply in id order, until the second arrives. */
  private held: Float32Array | null = null;
  private readonly pending = new Map<number, { gradSum: Float32Array; samples: number }>();

  /** `paramCount`: the length of every gradient (a shard's length for a shard owner). */
  constructor(readonly paramCount: number) {
    this.accumulator = new Float64Array(paramCount);
    this.mean = new Float32Array(paramCount);
  }

  /** Starts a step that expects exactly these micro-batch ids; forgets anything of the last one. */
  begin(microBatchIds: readonly number[]): void {
    this.order = [...microBatchIds].sort((a, b) => a - b);
    this.next = 0;
    this.samples = 0;
    this.sqNorm = 0;
    this.held = null;
    this.pending.clear();
  }

  /**
   * Adds one micro-batch's gradient sum; replies may arrive in any order. The sum may read
   * `gradSum` until `finish()`, so the caller must not change it before then. Throws when the
   * length is not `paramCount`.
   */
  add(microBatchId: number, gradSum: Float32Array, samples: number): void {
    if (gradSum.length !== this.paramCount)
      throw new Error(
        `micro-batch ${microBatchId}: gradient has ${gradSum.length} values, expected ${this.paramCount}`,
      );
    this.pending.set(microBatchId, { gradSum, samples });
    while (this.next < this.order.length && this.pending.has(this.order[this.next]!)) {
      const id = this.order[this.next]!;
      const part = this.pending.get(id)!;
      this.pending.delete(id);
      this.samples += part.samples;
      this.fold(part.gradSum, this.next, this.next === this.order.length - 1);
      this.next++;
    }
  }

  /**
   * The reply at position `index` in id order. Sums are float64, left to right, so holding the
   * first reply changes no bit: f64(a) + f64(b) is the same whether or not f64(a) was stored first.
   */
  private fold(g: Float32Array, index: number, last: boolean): void {
    if (index === 0 && !last) {
      this.held = g;
      return;
    }
    const acc = this.accumulator;
    const first = this.held;
    this.held = null;
    const n = acc.length;
    if (!last) {
      if (first) for (let i = 0; i < n; i++) acc[i] = first[i]! + g[i]!;
      else for (let i = 0; i < n; i++) acc[i] = acc[i]! + g[i]!;
      return;
    }
    const inv = 1 / this.samples;
    const mean = this.mean;
    let sq = 0;
    if (index === 0) {
      for (let i = 0; i < n; i++) {
        const m = Math.fround(g[i]! * inv);
        mean[i] = m;
        sq += m * m;
      }
    } else if (first) {
      for (let i = 0; i < n; i++) {
        const m = Math.fround((first[i]! + g[i]!) * inv);
        mean[i] = m;
        sq += m * m;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const m = Math.fround((acc[i]! + g[i]!) * inv);
        mean[i] = m;
        sq += m * m;
      }
    }
    this.sqNorm = sq;
  }

  /** Whether every expected micro-batch has been added. */
  get isComplete(): boolean {
    return this.order.length > 0 && this.next === this.order.length;
  }

  /**
   * The mean gradient (sum / total samples) and its squared L2 norm. The array is this object's
   * own and is overwritten by the next step. Throws if a micro-batch is missing.
   */
  finish(): { meanGrad: Float32Array; samples: number; sqNorm: number } {
    if (this.next !== this.order.length || this.order.length === 0) {
      throw new Error(
        `reduce finished with micro-batch ${this.order[this.next]} missing (${this.order.length - this.next} of ${this.order.length})`,
      );
    }
    return { meanGrad: this.mean, samples: this.samples, sqNorm: this.sqNorm };
  }
}
