// The epoch-wise sampler: one seeded shuffle per epoch, read as one endless stream of sample
// positions. Step s takes positions [s*B, (s+1)*B), so the same seed gives the same batches
// whatever the worker count, and a batch may straddle an epoch boundary (nothing is dropped).

import { createRandom } from './data/seeded-random.js';

/** Deterministic sample order for a run; cheap to rebuild on any process from (size, seed). */
export class EpochSampler {
  readonly datasetSize: number;
  readonly seed: number;
  private readonly cache = new Map<number, Uint32Array>();

  constructor(datasetSize: number, seed: number) {
    if (!Number.isSafeInteger(datasetSize) || datasetSize < 1)
      throw new RangeError(`datasetSize must be a positive integer, got ${datasetSize}`);
    this.datasetSize = datasetSize;
    this.seed = seed;
  }

  /** The permutation of dataset indices for `epoch` (Fisher–Yates with an epoch-derived seed). */
  permutation(epoch: number): Uint32Array {
    let perm = this.cache.get(epoch);
    if (perm) return perm;
    perm = new Uint32Array(this.datasetSize);
    for (let i = 0; i < perm.length; i++) perm[i] = i;
    // Mix seed and epoch so neighbouring seeds do not give shifted copies of one stream.
    const random = createRandom(
      (Math.imul(this.seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(epoch + 1, 0xc2b2ae35)) >>> 0,
    );
    for (let i = perm.length - 1; i > 0; i--) {
      const j = Math.floor(random.next() * (i + 1));
      const t = perm[i]!;
      perm[i] = perm[j]!;
      perm[j] = t;
    }
    // Two epochs are enough: a batch touches at most the current and the next one.
    if (this.cache.size >= 2) this.cache.delete(Math.min(...this.cache.keys()));
    this.cache.set(epoch, perm);
    return perm;
  }

  /**
   * Dataset indices for positions [start, end) of `step`'s sample list, for global batch
   * `globalBatchSize`. `start`/`end` are the micro-batch ranges the coordinator hands out.
   */
  indicesFor(step: number, globalBatchSize: number, start = 0, end = globalBatchSize): Uint32Array {
    return this.samplesFor(step, globalBatchSize, start, end).indices;
  }

  /**
   * As {@link indicesFor}, with the epoch each position falls in: a batch that straddles an
   * epoch boundary holds samples of two epochs (per-sample augmentation is seeded by both).
   */
  samplesFor(
    step: number,
    globalBatchSize: number,
    start = 0,
    end = globalBatchSize,
  ): { indices: Uint32Array; epochs: Uint32Array } {
    const indices = new Uint32Array(end - start);
    const epochs = new Uint32Array(end - start);
    const first = step * globalBatchSize + start;
    for (let i = 0; i < indices.length; i++) {
      const position = first + i;
      const epoch = Math.floor(position / this.datasetSize);
      indices[i] = this.permutation(epoch)[position - epoch * this.datasetSize]!;
      epochs[i] = epoch;
    }
    return { indices, epochs };
  }

  /** The epoch (fractional) reached after `steps` steps of `globalBatchSize`. */
  epochAfter(steps: number, globalBatchSize: number): number {
    return (steps * globalBatchSize) / this.datasetSize;
  }
}
