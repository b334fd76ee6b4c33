// Watching and stopping batchlab processes started by tests.

import type { ChildProcess } from 'node:child_process';

/** Collects a process's stdout+stderr and resolves when it exits. */
export function watch(child: ChildProcess): { output: () => string; exit: Promise<number | null> } {
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))),
  );
  return { output: () => output, exit };
}

/** Resolves once the output shows progress at or past `step` of the run (progress lines "step N/M"). */
export async function waitForStep(output: () => string, step: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const done = [...output().matchAll(/step +(\d+)\/\d+/g)].map((m) => Number(m[1]));
    if (done.some((d) => d >= step)) return;
    if (Date.now() > deadline)
      throw new Error(`no progress past step ${step} within ${timeoutMs} ms; output:\n${output().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Resolves with the first match of `pattern` in the output. */
export async function waitForText(
  output: () => string,
  pattern: RegExp,
  timeoutMs = 60_000,
): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = output().match(pattern);
    if (m) return m;
    if (Date.now() > deadline)
      throw new Error(`no ${pattern} within ${timeoutMs} ms; output:\n${output().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
