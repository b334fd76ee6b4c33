// Progress for people: on a terminal one line rewritten in place (step, loss, samples/s, ETA);
// otherwise plain lines about every 5% of the run. Log lines print above the progress line.

import type { Evaluation } from '../shared/evaluate.js';
import type { RunStart } from '../coordinator/run-config.js';
import type { RunObserver } from '../coordinator/launch-local.js';
import type { StepRecord } from '../coordinator/trainer-observer.js';

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  const m = Math.floor(seconds / 60);
  return `${m}m${String(Math.round(seconds - 60 * m)).padStart(2, '0')}s`;
}

export class ProgressReporter implements RunObserver {
  private totalSteps = 0;
  private samplesPerSecond = 0;
  private secondsPerStep = 0;
  private lastDrawMs = 0;
  private line = '';
  private lastEval: Evaluation | null = null;
  private readonly every: () => number;

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
    private readonly isTTY = Boolean(out.isTTY),
  ) {
    this.every = () => Math.max(1, Math.round(this.totalSteps / 20));
  }

  /** Sets the run length once it is known. */
  start(totalSteps: number): void {
    this.totalSteps = totalSteps;
  }

  onRunStart({ steps }: RunStart): void {
    this.start(steps);
  }

  onStep(record: StepRecord): void {
    // Exponential averages smooth the noisy per-step numbers without hiding trends.
    const alpha = record.step < 5 ? 0.5 : 0.1;
    const sps = record.stats.samples / record.wallSeconds;
    this.samplesPerSecond = this.samplesPerSecond ? (1 - alpha) * this.samplesPerSecond + alpha * sps : sps;
    this.secondsPerStep = this.secondsPerStep
      ? (1 - alpha) * this.secondsPerStep + alpha * record.wallSeconds
      : record.wallSeconds;
    const done = record.step + 1;
    const eta = (this.totalSteps - done) * this.secondsPerStep;
    const width = String(this.totalSteps).length;
    this.line =
      `step ${String(done).padStart(width)}/${this.totalSteps}  loss ${record.loss.toFixed(4)}  acc ${(100 * record.accuracy).toFixed(1)}%` +
      `  ${Math.round(this.samplesPerSecond).toLocaleString('en-US')} samples/s  workers ${record.workers}  ETA ${formatSeconds(eta)}` +
      (this.lastEval ? `  eval acc ${(100 * this.lastEval.accuracy).toFixed(1)}%` : '');
    if (this.isTTY) {
      const now = Date.now();
      if (now - this.lastDrawMs > 100 || done === this.totalSteps) {
        this.lastDrawMs = now;
        this.draw();
      }
    } else if (done % this.every() === 0 || done === this.totalSteps || done === 1) {
      this.out.write(`${this.line}\n`);
    }
  }

  onEval(step: number, evaluation: Evaluation): void {
    this.lastEval = evaluation;
    this.log(
      `eval after step ${step + 1}: loss ${evaluation.loss.toFixed(4)}, accuracy ${(100 * evaluation.accuracy).toFixed(2)}% on ${evaluation.samples} test samples`,
    );
  }

  /** Prints a line without breaking the progress line. */
  log(text: string): void {
    if (this.isTTY && this.line) {
      this.out.write(`\r\x1b[2K${text}\n`);
      this.draw();
    } else {
      this.out.write(`${text}\n`);
    }
  }

  /** Ends the progress line so later output starts on a fresh line. */
  finish(): void {
    if (this.isTTY && this.line) this.out.write('\n');
    this.line = '';
  }

  private draw(): void {
    const columns = this.out.columns ?? 120;
    this.out.write(`\r\x1b[2K${this.line.slice(0, Math.max(20, columns - 1))}`);
  }
}
