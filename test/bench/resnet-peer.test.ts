// PyTorch's side of the ResNet-20 backend comparison (bench/resnet_peer.py through
// benchPytorchResnet): the same architecture (its parameter count is batchlab's), one thread,
// a point per batch size, and a visible reason when torch is missing. The real run needs
// python3-torch: without it the test is skipped with the reason in its name, except under CI=true.

import { describe, expect, it } from 'vitest';
import '@tensorflow/tfjs-backend-cpu';
import { benchPytorchResnet, RESNET_BENCH } from '../../bench/backends.js';
import { probeTorch } from '../../bench/peer.js';
import { buildModel } from '../../shared/models/index.js';

const inCi = process.env.CI === 'true';
const torch = probeTorch();
const unavailable = 'reason' in torch ? torch.reason : null;

describe('benchPytorchResnet', () => {
  it('says why when the interpreter cannot be run', async () => {
    expect(await benchPytorchResnet({ batches: [2], seconds: 0, warmup: 0, python: 'no-python3' })).toEqual({
      available: false,
      reason: expect.stringMatching(/no-python3: not found.*apt-get install python3-torch/),
    });
  });

  const what = "times ResNet-20's gradient at each batch, one thread, with batchlab's parameter count";
  it.skipIf(unavailable !== null && !inCi)(
    unavailable === null || inCi ? what : `${what} (skipped: ${unavailable})`,
    { timeout: 120_000 },
    async () => {
      expect(unavailable, 'python3-torch is required under CI=true (apt-get install python3-torch)').toBeNull();
      const r = await benchPytorchResnet({ batches: [2, 3], seconds: 0, warmup: 1 });
      if (!r.available) throw new Error(r.reason);
      expect(r.threads).toBe(1);
      expect(r.depth).toBe(20);
      const model = buildModel('resnet', RESNET_BENCH);
      const ours = model.trainableWeights.reduce(
        (sum, w) => sum + w.shape.reduce<number>((a, b) => a * (b ?? 1), 1),
        0,
      );
      model.dispose();
      expect(r.params).toBe(ours);
      expect(r.points.map((p) => p.batch)).toEqual([2, 3]);
      for (const p of r.points) {
        expect(p.calls).toBeGreaterThanOrEqual(2);
        expect(p.samplesPerSecond).toBeCloseTo((p.batch * p.calls) / p.seconds, 6);
      }
    },
  );
});
