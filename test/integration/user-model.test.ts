// The user's own model: a TensorFlow.js layers model.json written here (built with tfjs-layers in
// this file, not by batchlab) trains with `batchlab local --model path`, the same bits on 1 and 2
// workers; its --save-model output stands alone; --init-from and --model of that output start
// from its weights; a model.json with weight files (written here) is loaded exactly; and every
// model batchlab cannot train under its design is refused at start (exit 2) naming what to change.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readWeights } from '../../shared/param-layout.js';
import { runCli, SUBSET_DIR, type CliResult } from '../support/cli.js';
import { accuracyOnRawPixels, loadSavedModel, readIdx } from '../support/saved-model.js';
import { expectBitIdentical, readSavedWeights } from '../support/tensors.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-user-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => tf.setBackend('cpu'));

/** `batchlab local` on the embedded fashion-mnist subset (unless `args` name a --dataset), no metrics port, no periodic evaluation. */
function local(args: string[], workers = 1): Promise<CliResult> {
  return runCli(
    [
      'local',
      ...['--workers', String(workers), '--data-dir', SUBSET_DIR],
      ...(args.includes('--dataset') ? [] : ['--dataset', 'fashion-mnist']),
      ...['--metrics-port', 'off', '--eval-every', '0', '--seed', '5'],
      ...args,
    ],
    {},
    180_000,
  );
}

/** One step that leaves every weight's bits as they are: SGD without momentum at a learning rate far below float32's resolution. */
const STILL = ['--steps', '1', '--optimizer', 'sgd', '--momentum', '0', '--lr', '1e-30'];

/**
 * A small conv net for 28×28×1 images, as a graph (functional) model; with `seed`, seeded
 * initializers for every tensor (biases too: none is zero, which even a step at --lr 1e-30 moves).
 */
function convNet(seed?: number): tfl.LayersModel {
  const init = (s: number) => (seed === undefined ? undefined : tfl.initializers.glorotNormal({ seed: seed + s }));
  const input = tfl.input({ shape: [28, 28, 1], name: 'image' });
  let x = tfl.layers
    .conv2d({
      filters: 4,
      kernelSize: 3,
      activation: 'relu',
      kernelInitializer: init(1),
      biasInitializer: init(5),
      name: 'c1',
    })
    .apply(input) as tfl.SymbolicTensor;
  x = tfl.layers.maxPooling2d({ poolSize: 2, name: 'p1' }).apply(x) as tfl.SymbolicTensor;
  x = tfl.layers.flatten({ name: 'f' }).apply(x) as tfl.SymbolicTensor;
  x = tfl.layers
    .dense({ units: 16, activation: 'relu', kernelInitializer: init(2), biasInitializer: init(6), name: 'd1' })
    .apply(x) as tfl.SymbolicTensor;
  x = tfl.layers
    .dense({ units: 10, kernelInitializer: init(3), biasInitializer: init(4), name: 'out' })
    .apply(x) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: x, name: 'mine' });
}

/** The topology of `model` as model.json holds it (snake_case), then disposes the model. */
function topologyOf(model: tfl.LayersModel): Record<string, unknown> {
  const topology = model.toJSON(undefined, false) as Record<string, unknown>;
  model.dispose();
  return topology;
}

/** Writes `{format, modelTopology, ...extra}` as `name`/model.json under the test directory; returns its path. */
function writeModelJson(name: string, topology: unknown, extra: Record<string, unknown> = {}): string {
  mkdirSync(join(dir, name), { recursive: true });
  const path = join(dir, name, 'model.json');
  writeFileSync(path, JSON.stringify({ format: 'layers-model', modelTopology: topology, ...extra }));
  return path;
}

const report = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const testImages = readIdx(join(SUBSET_DIR, 't10k-images-idx3-ubyte.gz')).data;
const testLabels = readIdx(join(SUBSET_DIR, 't10k-labels-idx1-ubyte.gz')).data;

describe('--model path/model.json (topology only, written here)', () => {
  const modelPath = writeModelJson('conv', topologyOf(convNet()));
  const saved = (workers: number) => join(dir, `saved-${workers}`);

  it('trains, with the same bits on 1 and 2 workers', async () => {
    for (const workers of [1, 2]) {
      const result = await local(
        [
          ...['--model', modelPath, '--steps', '40', '--global-batch', '64', '--micro-batch', '16'],
          ...['--save-model', saved(workers), '--report', `${saved(workers)}.json`],
        ],
        workers,
      );
      expect(result.code, result.stderr).toBe(0);
    }
    const one = report(`${saved(1)}.json`);
    const two = report(`${saved(2)}.json`);
    expect(two.workers).toBe(2);
    expect(one.model).toBe(modelPath);
    expect(one.evalAccuracy, 'trained well past chance').toBeGreaterThan(0.55);
    expectBitIdentical(readSavedWeights(saved(1)), readSavedWeights(saved(2)), '1 vs 2 workers');
    expect(two.evalLoss).toBe(one.evalLoss);
  }, 400_000);

  it('saves a model that tf.loadLayersModel loads and that reproduces the reported accuracy', async () => {
    const run = report(`${saved(2)}.json`);
    const loaded = await loadSavedModel(saved(2));
    try {
      const accuracy = accuracyOnRawPixels(loaded, testImages, testLabels);
      expect(Math.abs(accuracy - run.evalAccuracy), `${accuracy} vs ${run.evalAccuracy}`).toBeLessThanOrEqual(0.005);
      const meta = loaded.getUserDefinedMetadata() as Record<string, Record<string, unknown>>;
      expect(meta.runConfig).toMatchObject({ model: modelPath });
    } finally {
      loaded.dispose();
    }
  });

  it('--init-from the saved directory starts from its weights: at step 0 they evaluate as saved', async () => {
    const out = join(dir, 'init-from');
    const result = await local([
      ...['--model', modelPath, '--init-from', saved(2), ...STILL],
      ...['--save-model', out, '--report', `${out}.json`],
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain(`--init-from ${saved(2)}: starting at step 0 from its weights`);
    expectBitIdentical(readSavedWeights(saved(2)), readSavedWeights(out), 'init-from run vs the saved weights');
    const run = report(`${out}.json`);
    const savedEvaluation = JSON.parse(readFileSync(join(saved(2), 'model.json'), 'utf8')).userDefinedMetadata
      .evaluation;
    expect(run.initFrom).toBe(saved(2));
    expect(run.steps).toBe(1);
    expect([run.evalAccuracy, run.evalLoss]).toEqual([savedEvaluation.accuracy, savedEvaluation.loss]);
  }, 200_000);

  it('--model of the saved model.json leaves out its standardize layer and starts from its weights', async () => {
    const out = join(dir, 'from-saved');
    const result = await local([
      ...['--model', join(saved(2), 'model.json'), ...STILL],
      ...['--save-model', out, '--report', `${out}.json`],
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/its 'standardize' layer is left out/);
    expectBitIdentical(readSavedWeights(saved(2)), readSavedWeights(out), 'the saved model trained on vs its weights');
    // Standardized once: the same evaluation as the run that saved it.
    expect(report(`${out}.json`).evalLoss).toBe(report(`${saved(2)}.json`).evalLoss);
  }, 200_000);
});

it('--init-from works with a built-in model, and warns when this run trains on other data', async () => {
  const first = join(dir, 'cnn');
  const common = ['--model', 'cnn', '--hidden', '4,8'];
  let result = await local([...common, '--steps', '5', '--save-model', first]);
  expect(result.code, result.stderr).toBe(0);
  const out = join(dir, 'cnn-again');
  result = await local([...common, '--init-from', first, ...STILL, '--save-model', out]);
  expect(result.code, result.stderr).toBe(0);
  expectBitIdentical(readSavedWeights(first), readSavedWeights(out), 'init-from run vs the saved cnn');
  // Weights trained on other data are a warning, not a refusal (fine-tuning is a use).
  result = await local([...common, '--init-from', first, '--steps', '1', '--dataset', 'synthetic']);
  expect(result.code, result.stderr).toBe(0);
  expect(result.stderr).toMatch(/warning: --init-from .*cnn: its weights were trained on other data \(fashion-mnist/);
  expect(result.stderr).toMatch(/warning: --init-from .*cnn: its weights saw inputs standardized with mean 0\.\d+/);
}, 200_000);

it('a model.json with weight files (written here, in two shards) starts from exactly those weights', async () => {
  const model = convNet(7);
  const expected = readWeights(model);
  const { data, specs } = await tf.io.encodeWeights(
    model.weights.map((w) => ({ name: w.originalName, tensor: w.read() })),
  );
  const bytes = Buffer.from(data);
  const half = 4 * Math.floor(bytes.length / 8);
  const path = writeModelJson('with-weights', topologyOf(model), {
    weightsManifest: [{ paths: ['group1-shard1of2.bin', 'group1-shard2of2.bin'], weights: specs }],
  });
  writeFileSync(join(dir, 'with-weights', 'group1-shard1of2.bin'), bytes.subarray(0, half));
  writeFileSync(join(dir, 'with-weights', 'group1-shard2of2.bin'), bytes.subarray(half));
  const out = join(dir, 'with-weights-out');
  const result = await local(['--model', path, ...STILL, '--save-model', out]);
  expect(result.code, result.stderr).toBe(0);
  expect(result.stderr).toContain('weights loaded from its weight files');
  expectBitIdentical(expected, readSavedWeights(out), "the file's weights vs the run's");
}, 200_000);

describe('refused at start with exit 2', () => {
  /** Runs one step with `args` and expects exit 2 and `message` on stderr. */
  async function refused(args: string[], message: RegExp): Promise<void> {
    const result = await local(['--steps', '1', ...args]);
    expect(result.stderr).toMatch(message);
    expect(result.code, result.stderr).toBe(2);
  }

  /** A sequential model on 28×28×1 from `layers` (the first gets the input shape), as model.json. */
  function sequential(name: string, layers: tfl.layers.Layer[]): string {
    return writeModelJson(name, topologyOf(tfl.sequential({ layers, name })));
  }
  const flatten = () => tfl.layers.flatten({ inputShape: [28, 28, 1], name: 'flatten' });

  it('a --model that is neither a built-in name nor a path', () =>
    refused(['--model', 'resnet50'], /--model: got "resnet50"; expected one of mlp, cnn, resnet, or the path/));

  it('a missing model file', () =>
    refused(
      ['--model', join(dir, 'nowhere', 'model.json')],
      /--model: got ".*nowhere\/model.json"; expected a readable file \(not found\)/,
    ));

  it('an input shape other than the sample shape', () =>
    refused(
      [
        '--model',
        sequential('cifar-input', [tfl.layers.flatten({ inputShape: [32, 32, 3] }), tfl.layers.dense({ units: 10 })]),
      ],
      /the model's input is \[32, 32, 3\] but fashion-mnist's samples are \[28, 28, 1\]/,
    ));

  it('output units other than the number of classes', () =>
    refused(
      ['--model', sequential('seven', [flatten(), tfl.layers.dense({ units: 7, name: 'out' })])],
      /the model's output is \[7\] but fashion-mnist has 10 classes/,
    ));

  it('a final softmax, naming the layer', () =>
    refused(
      [
        '--model',
        sequential('softmax', [flatten(), tfl.layers.dense({ units: 10, activation: 'softmax', name: 'probs' })]),
      ],
      /the output layer 'probs' \(Dense\) applies a softmax.*set its activation to linear/,
    ));

  it.each([
    ['Dropout', () => tfl.layers.dropout({ rate: 0.5, name: 'drop' })],
    ['GaussianNoise', () => tfl.layers.gaussianNoise({ stddev: 0.1, name: 'drop' })],
    ['AlphaDropout', () => tfl.layers.alphaDropout({ rate: 0.1, name: 'drop' })],
  ])('a random-at-training-time layer (%s), naming it', (kind, layer) =>
    refused(
      ['--model', sequential(`random-${kind}`, [flatten(), layer(), tfl.layers.dense({ units: 10 })])],
      new RegExp(`layer 'drop' \\(${kind}\\) draws random numbers at training time`),
    ),
  );

  it('a frozen layer (trainable: false), naming it', () => {
    const frozen = tfl.layers.dense({ units: 16, name: 'frozen', trainable: false });
    return refused(
      ['--model', sequential('frozen', [flatten(), frozen, tfl.layers.dense({ units: 10 })])],
      /layer 'frozen' \(Dense\) is frozen \(trainable: false\)/,
    );
  });

  it('a batch norm without scale, naming it', () => {
    const norm = tfl.layers.batchNormalization({ scale: false, name: 'norm' });
    return refused(
      ['--model', sequential('unscaled', [flatten(), norm, tfl.layers.dense({ units: 10 })])],
      /layer 'norm' \(BatchNormalization\) has scale: false: tfjs-layers cannot train such a layer/,
    );
  });

  it('a stateful RNN, naming it', () => {
    const model = tfl.sequential({
      layers: [
        tfl.layers.reshape({ targetShape: [28, 28], inputShape: [28, 28, 1] }),
        tfl.layers.simpleRNN({ units: 8, recurrentInitializer: 'glorotNormal', name: 'rnn' }),
        tfl.layers.dense({ units: 10 }),
      ],
    });
    const topology = topologyOf(model) as { config: { layers: { config: Record<string, unknown> }[] } };
    topology.config.layers.find((l) => l.config.name === 'rnn')!.config.stateful = true;
    return refused(['--model', writeModelJson('stateful', topology)], /layer 'rnn' \(SimpleRNN\) is stateful/);
  });

  it('two outputs', () => {
    const input = tfl.input({ shape: [28, 28, 1] });
    const flat = tfl.layers.flatten().apply(input) as tfl.SymbolicTensor;
    const a = tfl.layers.dense({ units: 10 }).apply(flat) as tfl.SymbolicTensor;
    const b = tfl.layers.dense({ units: 10 }).apply(flat) as tfl.SymbolicTensor;
    const path = writeModelJson('two-outputs', topologyOf(tfl.model({ inputs: input, outputs: [a, b] })));
    return refused(['--model', path], /the model has 1 inputs and 2 outputs/);
  });

  it('a layer class TensorFlow.js does not know, naming it', () => {
    const topology = topologyOf(
      tfl.sequential({ layers: [flatten(), tfl.layers.dense({ units: 10, name: 'mine' })] }),
    ) as {
      config: { layers: { class_name: string; config: Record<string, unknown> }[] };
    };
    topology.config.layers.find((l) => l.config.name === 'mine')!.class_name = 'MyDense';
    return refused(
      ['--model', writeModelJson('custom', topology)],
      /layer 'mine' \(MyDense\): TensorFlow.js layers has no class MyDense/,
    );
  });

  it('a regularizer, naming the layer', () =>
    refused(
      [
        '--model',
        sequential('l2', [flatten(), tfl.layers.dense({ units: 10, name: 'out', kernelRegularizer: 'l1l2' })]),
      ],
      /layer 'out' \(Dense\) has a kernel_regularizer/,
    ));

  it('--hidden with a model file', () =>
    refused(
      ['--model', join(dir, 'conv', 'model.json'), '--hidden', '8'],
      /--hidden: got "8"; expected nothing with a model file/,
    ));

  it('--init-from with --resume', () =>
    refused(
      ['--init-from', dir, '--resume', '--checkpoint-dir', join(dir, 'checkpoints')],
      /--init-from: got .*; expected nothing with --resume/,
    ));

  it('--init-from a directory whose tensors differ, naming the first', () =>
    refused(
      ['--model', 'cnn', '--hidden', '4,16', '--init-from', join(dir, 'cnn')],
      /--init-from .*cnn: the model's tensor conv2\/kernel is \[3, 3, 4, 16\] but .*model.json has it \[3, 3, 4, 8\]/,
    ));
});
