// A worker that leaves a running coordinator takes its worker-labelled series with it: after a
// real worker process is killed, the coordinator's /metrics shows none of its series, while the
// remaining worker's stay.

import type { ChildProcess } from 'node:child_process';
import { afterAll, expect, it } from 'vitest';
import { startCli } from '../support/cli.js';
import { waitForStep, waitForText, watch } from '../support/processes.js';

const TOKEN = 'departed-worker-token';
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function start(args: string[]) {
  const child = startCli(args, { BATCHLAB_TOKEN: TOKEN });
  children.push(child);
  return { child, ...watch(child) };
}

/** Worker ids that have a series of `metric` in the /metrics text. */
function workersIn(text: string, metric: string): string[] {
  const ids = [...text.matchAll(new RegExp(`^${metric}\\{[^}]*worker="(\\d+)"`, 'gm'))].map((m) => m[1]!);
  return [...new Set(ids)].sort();
}

it('removes the series of a worker killed mid-run from the coordinator /metrics, and keeps the others', async () => {
  const coordinator = start([
    'coordinator',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--metrics-port',
    '0',
    '--dataset',
    'synthetic',
    '--hidden',
    '32',
    '--global-batch',
    '32',
    '--micro-batch',
    '8',
    '--steps',
    '100000',
    '--eval-every',
    '0',
    '--min-workers',
    '1',
    '--heartbeat-interval',
    '1',
  ]);
  const [, port, metricsUrl] = await waitForText(
    coordinator.output,
    /listening on ws:\/\/127\.0\.0\.1:(\d+), metrics at (http:\/\/\S+\/metrics)/,
  );
  const workers = ['stays', 'leaves'].map((name) =>
    start(['worker', '--connect', `ws://127.0.0.1:${port}`, '--name', name, '--metrics-port', 'off']),
  );
  const idOf = async (name: string): Promise<string> =>
    (await waitForText(coordinator.output, new RegExp(`worker (\\d+) joined \\(${name},`)))[1]!;
  const [stays, leaves] = [await idOf('stays'), await idOf('leaves')];
  // Both have computed in some step: each has its compute and throughput series.
  const scrape = async (): Promise<string> => (await fetch(metricsUrl!)).text();
  const deadline = Date.now() + 60_000;
  while (workersIn(await scrape(), 'batchlab_worker_throughput_samples_per_second').length < 2) {
    if (Date.now() > deadline) throw new Error(`both workers never computed:\n${coordinator.output().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const before = await scrape();
  for (const metric of ['batchlab_worker_throughput_samples_per_second', 'batchlab_worker_compute_seconds_count'])
    expect(workersIn(before, metric), metric).toEqual([stays, leaves].sort());

  workers[1]!.child.kill('SIGKILL');
  await waitForText(coordinator.output, new RegExp(`worker ${leaves} \\(leaves\\) lost`));
  // Steps go on with the one that stays.
  const steps = [...coordinator.output().matchAll(/step +(\d+)\/\d+/g)].map((m) => Number(m[1]));
  await waitForStep(coordinator.output, Math.max(0, ...steps) + 3);
  const after = await scrape();
  expect(after).not.toMatch(new RegExp(`\\{[^}]*worker="${leaves}"`));
  for (const metric of [
    'batchlab_worker_throughput_samples_per_second',
    'batchlab_worker_compute_seconds_count',
    'batchlab_worker_compute_seconds_bucket',
  ])
    expect(workersIn(after, metric), metric).toEqual([stays]);

  coordinator.child.kill('SIGINT');
  await coordinator.exit;
}, 180_000);
