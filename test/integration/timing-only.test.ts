// Timing-only runs (what `batchlab bench` uses): the same training, real workers over loopback,
// but no evaluation at all — not the periodic one, the final one or the train-split one — and a
// report whose accuracies say so with null. The same run without the flag evaluates.

import type { ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parseLocalSettings } from '../../cli/options.js';
import { ProgressReporter } from '../../cli/progress.js';
import { runCoordinator } from '../../coordinator/coordinator.js';
import type { RunReport } from '../../coordinator/report.js';
import type { Evaluation } from '../../shared/evaluate.js';
import { startCli, SUBSET_DIR } from '../support/cli.js';
import { watch } from '../support/processes.js';

class EvalCounter extends ProgressReporter {
  readonly evals: number[] = [];
  steps = 0;
  constructor() {
    super(new Writable({ write: (_chunk, _encoding, done) => done() }), false);
  }
  override onStep(): void {
    this.steps++;
  }
  override onEval(step: number, _evaluation: Evaluation): void {
    this.evals.push(step);
  }
}

const settings = parseLocalSettings({
  model: 'mlp',
  dataset: 'fashion-mnist',
  'data-dir': SUBSET_DIR,
  'global-batch': '32',
  'micro-batch': '16',
  workers: '2',
  steps: '3',
  'eval-every': '1',
  'metrics-port': 'off',
  backend: 'auto',
});

const TOKEN = 'timing-only-test-token';

/** The coordinator in this process (what `batchlab local` runs), two real worker processes. */
async function run(timingOnly: boolean, observer: EvalCounter): Promise<RunReport> {
  const workers: { child: ChildProcess; output: () => string }[] = [];
  // Workers that all exit (a refused handshake, a crash) end the run instead of leaving it waiting.
  const controller = new AbortController();
  try {
    return await runCoordinator(
      { ...settings, timingOnly, host: '127.0.0.1', port: 0, token: TOKEN, syntheticTrain: undefined, syntheticTest: undefined, command: 'test' },
      {
        log: () => {},
        observer,
        signal: controller.signal,
        onListening: ({ port }) => {
          for (const name of ['w1', 'w2']) {
            const child = startCli(['worker', '--connect', `ws://127.0.0.1:${port}`, '--name', name, '--metrics-port', 'off', '--data-dir', SUBSET_DIR], { BATCHLAB_TOKEN: TOKEN });
            const watched = watch(child);
            workers.push({ child, output: watched.output });
            void watched.exit.then(() => {
              if (workers.every((w) => w.child.exitCode !== null || w.child.signalCode !== null)) controller.abort(new Error('every worker exited'));
            });
          }
        },
      },
    );
  } catch (error) {
    throw new Error(`${String(error)}\nworker output:\n${workers.map((w) => w.output()).join('\n')}`);
  } finally {
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  }
}

describe('timing-only runs', () => {
  it('train every step but never evaluate, and report null accuracies; without it, every eval runs', async () => {
    const timed = new EvalCounter();
    const t = await run(true, timed);
    expect(timed.steps).toBe(3);
    expect(t.steps).toBe(3);
    expect(timed.evals).toEqual([]);
    expect(t.finalLoss).toBeGreaterThan(0);
    expect([t.evalAccuracy, t.evalLoss, t.trainAccuracy, t.generalizationGap]).toEqual([null, null, null, null]);

    const full = new EvalCounter();
    const f = await run(false, full);
    expect(full.evals).toEqual([0, 1, 2]);
    expect(f.evalAccuracy).toBeGreaterThan(0);
    expect(f.trainAccuracy).toBeGreaterThan(0);
    expect(f.generalizationGap).toBeCloseTo(f.trainAccuracy! - f.evalAccuracy!, 12);
    // Skipping evaluation changes nothing about the training itself.
    expect(t.finalLoss).toBe(f.finalLoss);
  }, 120_000);
});
