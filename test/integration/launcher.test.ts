// A run set up only the way torchrun-style launchers do it: the coordinator gets WORLD_SIZE and
// MASTER_PORT, each worker MASTER_ADDR, MASTER_PORT, RANK and LOCAL_RANK. The coordinator waits
// for WORLD_SIZE workers on MASTER_PORT, the workers are named by their rank, and each logs the
// device its local rank maps to. A --config file sits above the launcher variables.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { startCli } from '../support/cli.js';
import { freePort } from '../support/prometheus.js';
import { watch, waitForText } from '../support/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-launcher-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

it('WORLD_SIZE, MASTER_PORT, RANK and LOCAL_RANK set up a run without a flag for them', async () => {
  const port = await freePort();
  const report = join(dir, 'report.json');
  const coordinator = startCli(
    [
      'coordinator',
      '--insecure',
      '--host',
      '127.0.0.1',
      '--dataset',
      'synthetic',
      '--hidden',
      '16',
      '--global-batch',
      '32',
      '--micro-batch',
      '8',
      '--steps',
      '3',
      '--eval-every',
      '0',
      '--metrics-port',
      'off',
      '--report',
      report,
    ],
    { WORLD_SIZE: '2', MASTER_PORT: String(port) },
  );
  children.push(coordinator);
  const coordinatorRun = watch(coordinator);
  await waitForText(coordinatorRun.output, new RegExp(`listening on ws://127\\.0\\.0\\.1:${port}\\b`));

  const workers = [0, 1].map((rank) => {
    const child = startCli(['worker', '--backend', 'cpu', '--metrics-port', 'off'], {
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      RANK: String(rank),
      LOCAL_RANK: String(rank),
      // As a launcher that gave the node's GPUs 4 and 6 to this job would leave it.
      CUDA_VISIBLE_DEVICES: '4,6',
    });
    children.push(child);
    return watch(child);
  });
  expect(await coordinatorRun.exit).toBe(0);
  expect(await Promise.all(workers.map((w) => w.exit))).toEqual([0, 0]);

  const log = coordinatorRun.output();
  // Two workers were waited for, and both had joined before the first step.
  expect(log).toMatch(/waiting for workers: 0 of 2 ready/);
  const joined = [...log.matchAll(/worker \d+ joined \((rank-\d+),/g)].map((m) => m[1]);
  expect(joined.sort()).toEqual(['rank-0', 'rank-1']);
  const ready = log.indexOf('2 workers ready');
  expect(ready).toBeGreaterThan(log.lastIndexOf(' joined ('));
  expect(JSON.parse(readFileSync(report, 'utf8'))).toMatchObject({ workers: 2, steps: 3 });
  expect(workers[0]!.output()).toContain('LOCAL_RANK=0: CUDA_VISIBLE_DEVICES=4 (entry 0 of 4,6) for tensorflow-gpu');
  expect(workers[1]!.output()).toContain('LOCAL_RANK=1: CUDA_VISIBLE_DEVICES=6 (entry 1 of 4,6) for tensorflow-gpu');
}, 120_000);

it("a --config file's port, min-workers and name win over MASTER_PORT, WORLD_SIZE and RANK", async () => {
  const [launcherPort, filePort] = [await freePort(), await freePort()];
  const coordinatorConfig = join(dir, 'coordinator.yaml');
  writeFileSync(coordinatorConfig, `port: ${filePort}\nmin-workers: 1\n`);
  const workerConfig = join(dir, 'worker.yaml');
  writeFileSync(workerConfig, `connect: ws://127.0.0.1:${filePort}\nname: named-in-file\n`);
  const coordinator = startCli(
    [
      'coordinator',
      '--config',
      coordinatorConfig,
      '--insecure',
      '--host',
      '127.0.0.1',
      '--dataset',
      'synthetic',
      '--hidden',
      '16',
      '--global-batch',
      '16',
      '--micro-batch',
      '8',
      '--steps',
      '2',
      '--eval-every',
      '0',
      '--metrics-port',
      'off',
    ],
    { WORLD_SIZE: '2', MASTER_PORT: String(launcherPort) },
  );
  children.push(coordinator);
  const coordinatorRun = watch(coordinator);
  await waitForText(coordinatorRun.output, new RegExp(`listening on ws://127\\.0\\.0\\.1:${filePort}\\b`));
  const worker = startCli(['worker', '--config', workerConfig, '--backend', 'cpu', '--metrics-port', 'off'], {
    MASTER_ADDR: '127.0.0.1',
    MASTER_PORT: String(launcherPort),
    RANK: '5',
  });
  children.push(worker);
  const workerRun = watch(worker);
  expect(await coordinatorRun.exit).toBe(0);
  expect(await workerRun.exit).toBe(0);
  const log = coordinatorRun.output();
  expect(log).toMatch(/waiting for workers: 0 of 1 ready/);
  expect(log).toMatch(/worker \d+ joined \(named-in-file,/);
}, 120_000);

it("local's workers do not take the RANK and LOCAL_RANK of the process that starts them", async () => {
  // Past the end of CUDA_VISIBLE_DEVICES for any worker that read it: such a worker would refuse to start.
  const local = startCli(
    [
      'local',
      '--workers',
      '2',
      '--dataset',
      'synthetic',
      '--hidden',
      '16',
      '--global-batch',
      '16',
      '--micro-batch',
      '8',
      '--steps',
      '2',
      '--eval-every',
      '0',
      '--metrics-port',
      'off',
    ],
    { RANK: '3', LOCAL_RANK: '3', CUDA_VISIBLE_DEVICES: '0,1' },
  );
  children.push(local);
  const run = watch(local);
  expect(await run.exit).toBe(0);
  expect(run.output()).not.toMatch(/LOCAL_RANK|rank-3/);
}, 120_000);
