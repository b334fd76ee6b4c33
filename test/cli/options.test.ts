// Bad options are refused at once, naming the option, the value and what is accepted, with a
// non-zero exit; environment variables BATCHLAB_<OPTION> go through the same checks.

import { describe, expect, it } from 'vitest';
import {
  parseLocalSettings,
  parseCoordinatorSettings,
  parseTrainingSettings,
  parseWorkerSettings,
} from '../../cli/options.js';
import { OptionError } from '../../shared/errors.js';
import { runCli } from '../support/cli.js';

describe('option validation (in process)', () => {
  it.each([
    [{ 'global-batch': '-5' }, /--global-batch: got "-5"; expected an integer from 1/],
    [{ 'global-batch': '12abc' }, /--global-batch: got "12abc"/],
    [{ 'micro-batch': '0' }, /--micro-batch: got "0"; expected an integer from 1/],
    [
      { 'micro-batch': '256', 'global-batch': '128' },
      /--micro-batch: got "256"; expected at most --global-batch \(128\)/,
    ],
    [
      { model: 'vgg' },
      /--model: got "vgg"; expected one of mlp, cnn, resnet, or the path of a TensorFlow.js layers model.json/,
    ],
    [{ depth: '20' }, /--depth: got "20"; expected it only with --model resnet/],
    [{ model: 'resnet', depth: '10' }, /--depth: got "10"; expected 6n \+ 2 with n >= 1, e.g. 8, 14, 20/],
    [{ model: 'resnet', depth: '2' }, /--depth: got "2"; expected an integer from 8/],
    [{ model: 'resnet', hidden: '16,32' }, /--hidden: got "16,32"; expected three stage widths with --model resnet/],
    [{ dataset: 'imagenet' }, /--dataset: got "imagenet"; expected one of synthetic, fashion-mnist, mnist/],
    [{ optimizer: 'rmsprop' }, /--optimizer: got "rmsprop"; expected one of sgd, adam/],
    [{ lr: 'fast' }, /--lr: got "fast"; expected a number > 0/],
    [{ lr: '0' }, /--lr: got "0"/],
    [{ steps: '1.5' }, /--steps: got "1.5"; expected an integer/],
    [{ steps: '10', epochs: '2' }, /--epochs: .*either --steps or --epochs/],
    [{ hidden: '128,0' }, /--hidden: got "128,0"; expected comma-separated positive integers/],
    [{ momentum: '1' }, /--momentum: got "1"; expected a number >= 0 and < 1/],
    [{ backend: 'tpu' }, /--backend: got "tpu"; expected one of auto, tensorflow-gpu, webgpu, tensorflow, wasm, cpu/],
    [{ 'metrics-port': '70000' }, /--metrics-port: got "70000"; expected an integer from 0 to 65535/],
    [{ 'wire-dtype': 'bf16' }, /--wire-dtype: got "bf16"; expected one of f32, f16/],
    [{ balance: 'random' }, /--balance: got "random"; expected one of throughput, equal/],
    [{ augment: 'mixup' }, /--augment: got "mixup"; expected one of none, crop-flip/],
    [{ reducer: 'ring' }, /--reducer: got "ring"; expected one of star, sharded/],
    [{ reducer: 'sharded', 'wire-dtype': 'f16' }, /--wire-dtype: got "f16"; expected f32 with --reducer sharded/],
  ])('refuses %o', (raw, message) => {
    expect(() => parseTrainingSettings(raw)).toThrow(OptionError);
    expect(() => parseTrainingSettings(raw)).toThrow(message);
  });

  it('listens on loopback with --insecure unless --host is given, on every interface otherwise', () => {
    expect(parseCoordinatorSettings({ insecure: true }).host).toBe('127.0.0.1');
    expect(parseCoordinatorSettings({ insecure: true, host: '0.0.0.0' }).host).toBe('0.0.0.0');
    expect(parseCoordinatorSettings({ insecure: true, host: '10.1.2.3' }).host).toBe('10.1.2.3');
    expect(parseCoordinatorSettings({ token: 't' }).host).toBe('0.0.0.0');
  });

  it("takes --reducer sharded on a TLS coordinator, and a worker's peer certificate only with its key", () => {
    const raw = { reducer: 'sharded', token: 't', 'tls-cert': 'c.pem', 'tls-key': 'k.pem' };
    expect(parseCoordinatorSettings(raw).reducer).toBe('sharded');
    const worker = { connect: 'wss://h:7070' };
    expect(parseWorkerSettings({ ...worker, 'peer-tls-cert': 'c.pem', 'peer-tls-key': 'k.pem' }, {})).toMatchObject({
      peerTlsCert: 'c.pem',
      peerTlsKey: 'k.pem',
    });
    expect(() => parseWorkerSettings({ ...worker, 'peer-tls-cert': 'c.pem' }, {})).toThrow(
      /--peer-tls-key: .*expected both --peer-tls-cert and --peer-tls-key, or neither/,
    );
  });

  it('fills defaults that train on the embedded data', () => {
    const s = parseLocalSettings({});
    expect(s).toMatchObject({
      workers: 2,
      model: 'mlp',
      hidden: [256, 128],
      dataset: 'fashion-mnist',
      globalBatchSize: 128,
      microBatch: 32,
      steps: 300,
      optimizer: 'adam',
      lr: 0.001,
    });
  });

  it('turns --metrics-port off into no endpoint, and defaults to any free port', () => {
    expect(parseTrainingSettings({ 'metrics-port': 'off' }).metricsPort).toBeNull();
    expect(parseTrainingSettings({}).metricsPort).toBe(0);
    expect(parseTrainingSettings({ 'metrics-port': '9400' }).metricsPort).toBe(9400);
    expect(parseWorkerSettings({ connect: 'ws://127.0.0.1:1', 'metrics-port': 'off' }, {}).metricsPort).toBeNull();
  });

  it('caps the default micro-batch at a small global batch', () => {
    expect(parseTrainingSettings({ 'global-batch': '8' }).microBatch).toBe(8);
  });

  it('refuses slowdown factors below 1 or more factors than workers', () => {
    expect(() => parseLocalSettings({ workers: '2', 'debug-slowdown': '1,3,2' })).toThrow(
      /--debug-slowdown: got "1,3,2"; expected at most 2 comma-separated factors/,
    );
    expect(() => parseLocalSettings({ 'debug-slowdown': '0.5' })).toThrow(/--debug-slowdown: got "0.5"/);
    expect(parseLocalSettings({ workers: '3', 'debug-slowdown': '1,2.5' }).debugSlowdown).toEqual([1, 2.5]);
  });

  it('validates the worker transport and load-balancing options', () => {
    const base = { connect: 'ws://127.0.0.1:7070' };
    expect(parseWorkerSettings(base, {})).toMatchObject({
      clientMask: 'auto',
      maxMicroBatches: null,
      debugSlowdown: 1,
    });
    expect(() => parseWorkerSettings({ ...base, 'client-mask': 'none' }, {})).toThrow(
      /--client-mask: got "none"; expected one of auto, random, zero/,
    );
    expect(() => parseWorkerSettings({ ...base, 'max-micro-batches': '0' }, {})).toThrow(
      /--max-micro-batches: got "0"/,
    );
    expect(() => parseWorkerSettings({ ...base, 'debug-slowdown': '0.9' }, {})).toThrow(/--debug-slowdown: got "0.9"/);
  });

  it('takes --max-chunk auto or a number, and --memory-limit in bytes with an optional unit', () => {
    const base = { connect: 'ws://127.0.0.1:7070' };
    expect(parseWorkerSettings(base, {})).toMatchObject({ maxChunk: 1024, memoryLimit: null });
    expect(parseWorkerSettings({ ...base, 'max-chunk': 'auto' }, {}).maxChunk).toBe('auto');
    expect(parseWorkerSettings({ ...base, 'max-chunk': '64' }, {}).maxChunk).toBe(64);
    for (const [given, bytes] of [
      ['4000', 4000],
      ['500M', 500_000_000],
      ['512MiB', 512 * 2 ** 20],
      ['1.5GiB', 1.5 * 2 ** 30],
      ['2gb', 2e9],
    ] as const)
      expect(parseWorkerSettings({ ...base, 'memory-limit': given }, {}).memoryLimit, given).toBe(bytes);
    expect(() => parseWorkerSettings({ ...base, 'max-chunk': 'big' }, {})).toThrow(
      /--max-chunk: got "big"; expected an integer from 1 to 1000000, or auto/,
    );
    for (const bad of ['0', '-5', '12 parsecs', 'MiB'])
      expect(() => parseWorkerSettings({ ...base, 'memory-limit': bad }, {})).toThrow(
        new RegExp(
          `--memory-limit: got "${bad}"; expected a size in bytes of at least 1, e.g. 500000000, 500M or 512MiB`,
        ),
      );
  });

  it('builds the worker address from MASTER_ADDR and MASTER_PORT', () => {
    expect(parseWorkerSettings({}, { MASTER_ADDR: '10.1.2.3', MASTER_PORT: '29500' }).connect).toBe(
      'ws://10.1.2.3:29500',
    );
    expect(() => parseWorkerSettings({}, {})).toThrow(/--connect/);
    expect(() => parseWorkerSettings({ connect: 'http://host:1' }, {})).toThrow(
      /--connect: got "http:\/\/host:1"; expected a ws:\/\/ or wss:\/\/ URL/,
    );
  });
});

describe('--model resnet', () => {
  it('takes depth 20 and widths 16,32,64 unless told otherwise, and records --depth only for a resnet', () => {
    expect(parseTrainingSettings({ model: 'resnet' })).toMatchObject({ hidden: [16, 32, 64], depth: 20 });
    expect(parseTrainingSettings({ model: 'resnet', depth: '8', hidden: '4,8,8' })).toMatchObject({
      hidden: [4, 8, 8],
      depth: 8,
    });
    expect(parseTrainingSettings({ model: 'cnn' }).depth).toBeUndefined();
  });
});

describe('the batchlab command refuses bad input with exit code 2', () => {
  it.each([
    [['local', '--global-batch', '-5'], {}, /--global-batch: got "-5"/],
    [['local', '--micro-batch', '0'], {}, /--micro-batch: got "0"/],
    [['local', '--model', 'vgg'], {}, /--model: got "vgg"; expected one of mlp, cnn, resnet, or the path/],
    [['local', '--model', 'cnn', '--depth', '20'], {}, /--depth: got "20"; expected it only with --model resnet/],
    [
      ['local', '--global-batch', '128', '--micro-batch', '256'],
      {},
      /--micro-batch: got "256"; expected at most --global-batch \(128\)/,
    ],
    [
      ['local'],
      { BATCHLAB_GLOBAL_BATCH: '-5' },
      /BATCHLAB_GLOBAL_BATCH \(--global-batch\): got "-5"; expected an integer from 1/,
    ],
    [['local', '--no-such-option', '1'], {}, /Unknown argument/],
    [['worker', '--connect', 'localhost:7070'], {}, /--connect: got "localhost:7070"/],
    [
      ['worker', '--connect', 'ws://127.0.0.1:1', '--memory-limit', 'lots'],
      {},
      /--memory-limit: got "lots"; expected a size in bytes/,
    ],
    [['frobnicate'], {}, /Unknown argument: frobnicate|Name a command/],
    [
      ['bench', '--only', 'transport,gpu'],
      {},
      /--only: got "transport,gpu"; expected comma-separated sections from transport, reduce, scaling, balance, backends, peer/,
    ],
    [
      ['coordinator', '--port', '0'],
      { BATCHLAB_INSECURE: 'maybe' },
      /BATCHLAB_INSECURE \(--insecure\): got "maybe"; expected true or false/,
    ],
  ])('batchlab %s', async (args, env, message) => {
    const result = await runCli(args, env, 30_000);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    // Nothing ran: no progress, no summary.
    expect(result.stdout).not.toMatch(/summary/);
  });
});

it('ignores BATCHLAB_* variables that name no option, as Kubernetes service links inject them', async () => {
  const result = await runCli(
    ['worker', '--connect', 'ws://127.0.0.1:1', '--connect-timeout', '0.5', '--metrics-port', 'off'],
    {
      BATCHLAB_COORDINATOR_SERVICE_HOST: '10.0.0.1',
      BATCHLAB_COORDINATOR_PORT: 'tcp://10.0.0.1:7070',
    },
  );
  expect(result.stderr).not.toMatch(/Unknown argument/);
  expect(result.code).toBe(5);
  expect(result.stderr).toMatch(/could not reach ws:\/\/127\.0\.0\.1:1/);
});
