// The CIFAR ResNets of He et al. (2016, §4.2): a 3×3 conv, then three stages of n residual blocks
// with 16, 32 and 64 filters on 32×32, 16×16 and 8×8 maps, global average pooling and dense
// logits; depth 6n + 2 (ResNet-20: n = 3). Each block is conv3×3-BN-relu-conv3×3-BN plus its
// shortcut, then relu. Where a stage halves the map and doubles the filters, the shortcut is a
// strided 1×1 convolution with batch norm (the paper's option B; its CIFAR runs used option A,
// zero-padding, which tfjs-layers cannot express as a serializable layer). Convolutions that
// feed a batch norm have no bias (the norm's offset takes its place).

import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelConfig } from './index.js';

/** The depths offered: 6n + 2 for n = 1, 2, 3, 5, 7, 9, 18. */
export const RESNET_DEPTHS = [8, 14, 20, 32, 44, 56, 110] as const;

/** The depth when none is given: ResNet-20. */
export const DEFAULT_RESNET_DEPTH = 20;

/** Whether `depth` is 6n + 2 with n >= 1. */
export function isResnetDepth(depth: number): boolean {
  return Number.isInteger(depth) && depth >= 8 && (depth - 2) % 6 === 0;
}

/** Default filters per stage. */
export const RESNET_WIDTHS = [16, 32, 64];

/** Batch-norm constants: Keras's momentum convention (moving = m·moving + (1 − m)·batch). */
export const RESNET_BN = { momentum: 0.9, epsilon: 1e-5 };

/**
 * Builds a CIFAR ResNet of `config.depth` (default 20) layers; `hidden` sets the filters of the
 * three stages (default 16,32,64). Outputs logits.
 */
export function buildResnet(config: ModelConfig): tfl.LayersModel {
  const depth = config.depth ?? DEFAULT_RESNET_DEPTH;
  if (!isResnetDepth(depth))
    throw new Error(`resnet depth must be 6n + 2 with n >= 1 (e.g. ${RESNET_DEPTHS.join(', ')}); got ${depth}`);
  const n = (depth - 2) / 6;
  const widths = config.hidden.length > 0 ? config.hidden : RESNET_WIDTHS;
  if (widths.length !== 3) throw new Error(`resnet takes three stage widths (e.g. 16,32,64); got ${widths.join(',')}`);
  const conv = (filters: number, kernelSize: number, strides: number, name: string) =>
    tfl.layers.conv2d({ filters, kernelSize, strides, padding: 'same', useBias: false, name });
  const bn = (name: string) => tfl.layers.batchNormalization({ axis: -1, ...RESNET_BN, name });
  const relu = (name: string) => tfl.layers.activation({ activation: 'relu', name });

  const input = tfl.input({ shape: config.inputShape, name: 'input' });
  let x = conv(widths[0]!, 3, 1, 'conv0').apply(input) as tfl.SymbolicTensor;
  x = bn('bn0').apply(x) as tfl.SymbolicTensor;
  x = relu('relu0').apply(x) as tfl.SymbolicTensor;
  let channels = widths[0]!;
  widths.forEach((filters, s) => {
    for (let b = 0; b < n; b++) {
      const name = `s${s + 1}b${b + 1}`;
      const strides = s > 0 && b === 0 ? 2 : 1;
      let y = conv(filters, 3, strides, `${name}_conv1`).apply(x) as tfl.SymbolicTensor;
      y = bn(`${name}_bn1`).apply(y) as tfl.SymbolicTensor;
      y = relu(`${name}_relu1`).apply(y) as tfl.SymbolicTensor;
      y = conv(filters, 3, 1, `${name}_conv2`).apply(y) as tfl.SymbolicTensor;
      y = bn(`${name}_bn2`).apply(y) as tfl.SymbolicTensor;
      let shortcut = x;
      if (strides !== 1 || channels !== filters) {
        shortcut = conv(filters, 1, strides, `${name}_proj`).apply(x) as tfl.SymbolicTensor;
        shortcut = bn(`${name}_proj_bn`).apply(shortcut) as tfl.SymbolicTensor;
      }
      x = tfl.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as tfl.SymbolicTensor;
      x = relu(`${name}_relu2`).apply(x) as tfl.SymbolicTensor;
      channels = filters;
    }
  });
  x = tfl.layers.globalAveragePooling2d({ name: 'pool' }).apply(x) as tfl.SymbolicTensor;
  const logits = tfl.layers.dense({ units: config.numClasses, name: 'logits' }).apply(x) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: logits, name: `resnet${depth}` });
}
