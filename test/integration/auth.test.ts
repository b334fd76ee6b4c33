// The coordinator refuses peers without the token in the HTTP upgrade (401, before any
// WebSocket exists) and trains with a worker that has it, found through MASTER_ADDR/MASTER_PORT.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runCli, startCli, waitForOutput } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'batchlab-auth-'));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Status of a WebSocket upgrade attempt: 101 when accepted, else the HTTP status. */
function upgradeStatus(port: number, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers });
    ws.once('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('error', (e) => {
      if (!/Unexpected server response/.test(e.message)) reject(e);
    });
  });
}

function startCoordinator(extra: string[]): { child: ChildProcess; exit: Promise<number | null>; output: () => string } {
  const child = startCli(['coordinator', '--host', '127.0.0.1', '--port', '0', '--dataset', 'synthetic', '--metrics-port', 'off', '--global-batch', '32', '--micro-batch', '16', '--hidden', '16', ...extra]);
  children.push(child);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exit, output: () => output };
}

describe('coordinator authentication', () => {
  it('answers 401 to a missing or wrong token and trains with the right one', async () => {
    const report = join(dir, 'report.json');
    const coordinator = startCoordinator(['--token', 's3cret', '--steps', '5', '--report', report]);
    const port = Number((await waitForOutput(coordinator.child, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);

    expect(await upgradeStatus(port, {})).toBe(401);
    expect(await upgradeStatus(port, { authorization: 'Bearer wrong' })).toBe(401);
    expect(await upgradeStatus(port, { authorization: 's3cret' })).toBe(401);

    const intruder = await runCli(['worker', '--connect', `ws://127.0.0.1:${port}`, '--token', 'wrong', '--connect-timeout', '5']);
    expect(intruder.code).not.toBe(0);
    expect(intruder.stderr).toMatch(/401/);

    // Launchers (torchrun, Kubeflow, Slurm recipes) set MASTER_ADDR/MASTER_PORT; the token comes from the environment.
    const worker = await runCli(['worker'], { MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), BATCHLAB_TOKEN: 's3cret' });
    expect(worker.code, worker.stderr).toBe(0);
    expect(await coordinator.exit).toBe(0);
    expect(coordinator.output()).toMatch(/refused a connection .*missing or wrong token/);
    const summary = JSON.parse(readFileSync(report, 'utf8'));
    expect(summary).toMatchObject({ steps: 5, samples: 5 * 32, workers: 1 });
  }, 120_000);

  it('refuses to start without a token unless --insecure is given', async () => {
    const result = await runCli(['coordinator', '--port', '0', '--dataset', 'synthetic']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--token/);
    expect(result.stderr).toMatch(/--insecure/);
  });
});
