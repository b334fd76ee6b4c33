// Gradient reduction behind one interface (DESIGN.md "Reducer"). The star reducer sums on the
// coordinator in micro-batch-id order into a float64 accumulator, so the result does not depend
// on arrival order or on which worker computed what: N workers give 1 worker's bits.

/** Combines one step's per-micro-batch gradient sums into the mean gradient. */
export interface Reducer {
  /** Length of the flat gradient every reply must have. */
  readonly paramCount: number;
  /** Starts a step that expects exactly these micro-batch ids. */
  begin(microBatchIds: readonly number[]): void;
  /** Adds one micro-batch's gradient sum; replies may arrive in any order. */
  add(microBatchId: number, gradSum: Float32Array, samples: number): void;
  /** The mean gradient (sum / total samples). Throws if a micro-batch is missing. */
  finish(): { meanGrad: Float32Array; samples: number };
}

/** The coordinator sums everything (simple and exact; inbound traffic is N × model size). */
export class StarReducer implements Reducer {
  private readonly accumulator: Float64Array;
  private readonly mean: Float32Array;
  private order: number[] = [];
  private next = 0;
  private samples = 0;
  private readonly pending = new Map<number, { gradSum: Float32Array; samples: number }>();

  constructor(readonly paramCount: number) {
    this.accumulator = new Float64Array(paramCount);
    this.mean = new Float32Array(paramCount);
  }

  begin(microBatchIds: readonly number[]): void {
    this.order = [...microBatchIds].sort((a, b) => a - b);
    this.next = 0;
    this.samples = 0;
    this.pending.clear();
    this.accumulator.fill(0);
  }

  add(microBatchId: number, gradSum: Float32Array, samples: number): void {
    if (gradSum.length !== this.paramCount) throw new Error(`micro-batch ${microBatchId}: gradient has ${gradSum.length} values, expected ${this.paramCount}`);
    this.pending.set(microBatchId, { gradSum, samples });
    // Fold every reply whose turn has come, so reduction overlaps with waiting for the rest.
    while (this.next < this.order.length && this.pending.has(this.order[this.next]!)) {
      const id = this.order[this.next]!;
      const part = this.pending.get(id)!;
      this.pending.delete(id);
      const acc = this.accumulator;
      const g = part.gradSum;
      for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + g[i]!;
      this.samples += part.samples;
      this.next++;
    }
  }

  finish(): { meanGrad: Float32Array; samples: number } {
    if (this.next !== this.order.length) {
      throw new Error(`reduce finished with micro-batch ${this.order[this.next]} missing (${this.order.length - this.next} of ${this.order.length})`);
    }
    const inv = 1 / this.samples;
    for (let i = 0; i < this.mean.length; i++) this.mean[i] = this.accumulator[i]! * inv;
    return { meanGrad: this.mean, samples: this.samples };
  }
}
