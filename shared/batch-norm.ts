// Batch normalization under data parallelism. The ghost batch is the micro-batch: a worker
// normalizes each micro-batch with that micro-batch's own mean and (biased) variance, in one
// forward pass, and returns those statistics with its gradient. The coordinator alone keeps the
// moving statistics (what inference normalizes with), and updates them from the step's
// micro-batches in micro-batch-id order with tfjs's (Keras's) formula in float32:
//   moving ← moving − (moving − batch) · (1 − momentum)
// so any number of workers gives the bits one worker gives.
//
// Flat layout of one micro-batch's statistics, and of the moving statistics: for each
// BatchNormalization layer in model order, its mean [channels] then its variance [channels].

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';

/** One BatchNormalization layer of a model, as this module uses it. */
export interface BatchNormLayer {
  layer: tfl.layers.Layer;
  name: string;
  channels: number;
  momentum: number;
  movingMean: tfl.LayerVariable;
  movingVariance: tfl.LayerVariable;
}

/** The model's BatchNormalization layers in model order (inside nested models too); [] when it has none. */
export function batchNormLayersOf(model: tfl.LayersModel): BatchNormLayer[] {
  const found: BatchNormLayer[] = [];
  const visit = (layers: readonly tfl.layers.Layer[]): void => {
    for (const layer of layers) {
      const nested = (layer as unknown as { layers?: tfl.layers.Layer[] }).layers;
      if (Array.isArray(nested)) visit(nested);
      if (layer.getClassName() !== 'BatchNormalization') continue;
      const [movingMean, movingVariance] = layer.nonTrainableWeights;
      const config = layer.getConfig();
      if (!movingMean || !movingVariance || layer.nonTrainableWeights.length !== 2)
        throw new Error(`batch-norm layer ${layer.name} has no moving mean and variance`);
      if (config.center === false || config.scale === false)
        throw new Error(`batch-norm layer ${layer.name}: batchlab needs center and scale (tfjs trains no other)`);
      found.push({
        layer,
        name: layer.name,
        channels: tf.util.sizeFromShape(movingMean.shape as number[]),
        momentum: Number(config.momentum),
        movingMean,
        movingVariance,
      });
    }
  };
  visit(model.layers);
  return found;
}

/** Values in the flat layout: 2 × the channels of every layer. */
export function batchStatsLength(layers: readonly BatchNormLayer[]): number {
  return layers.reduce((n, l) => n + 2 * l.channels, 0);
}

/** The layers' moving statistics in the flat layout. */
export function readMovingStatistics(layers: readonly BatchNormLayer[]): Float32Array {
  const flat = new Float32Array(batchStatsLength(layers));
  let offset = 0;
  for (const l of layers) {
    for (const v of [l.movingMean, l.movingVariance]) {
      flat.set(v.read().dataSync(), offset);
      offset += l.channels;
    }
  }
  return flat;
}

/** Writes `flat` (the flat layout) into the layers' moving statistics. */
export function writeMovingStatistics(layers: readonly BatchNormLayer[], flat: Float32Array): void {
  if (flat.length !== batchStatsLength(layers))
    throw new Error(`moving statistics have ${flat.length} values, the model needs ${batchStatsLength(layers)}`);
  let offset = 0;
  for (const l of layers) {
    for (const v of [l.movingMean, l.movingVariance]) {
      const part = flat.subarray(offset, offset + l.channels);
      tf.tidy(() => {
        v.write(tf.tensor(part, v.shape as number[], 'float32'));
      });
      offset += l.channels;
    }
  }
}

/**
 * The coordinator's moving statistics of a model with batch norm: `values` in the flat layout,
 * updated after every step from the step's micro-batch statistics.
 */
export class MovingStatistics {
  readonly values: Float32Array;
  private readonly layers: readonly BatchNormLayer[];

  /** Starts from the layers' current moving statistics (their initializers: mean 0, variance 1). */
  constructor(layers: readonly BatchNormLayer[]) {
    this.layers = layers;
    this.values = readMovingStatistics(layers);
  }

  /** Takes the layers' moving statistics again (after weights were loaded into them, e.g. `--init-from`). */
  reload(): void {
    this.values.set(readMovingStatistics(this.layers));
  }

  /** Values per micro-batch (the flat layout). */
  get length(): number {
    return this.values.length;
  }

  /**
   * Folds in the step's micro-batch statistics, which must be in micro-batch-id order: one
   * moving-average update per micro-batch, per value
   *   moving ← moving − (moving − batch) · (1 − momentum)
   * each operation rounded to float32, as tfjs-layers' BatchNormalization computes it.
   */
  update(batches: readonly Float32Array[]): void {
    const values = this.values;
    for (const batch of batches) {
      if (batch.length !== values.length)
        throw new Error(`micro-batch statistics have ${batch.length} values, the model needs ${values.length}`);
      let offset = 0;
      for (const l of this.layers) {
        const decay = Math.fround(1 - l.momentum);
        const end = offset + 2 * l.channels;
        for (let i = offset; i < end; i++) {
          const moving = values[i]!;
          values[i] = moving - Math.fround(Math.fround(moving - batch[i]!) * decay);
        }
        offset = end;
      }
    }
  }

  /** Writes the moving statistics into the model's layers (for evaluation and saving). */
  writeTo(): void {
    writeMovingStatistics(this.layers, this.values);
  }
}
