// A flood of connections that never authenticate cannot end a run: against a coordinator
// allowed 256 descriptors, 400 sockets that stay silent or stop half-way through an HTTP
// upgrade without a token (and reconnect when closed) are refused at connect or closed after
// the pre-hello deadline, while the workers train to the end and every checkpoint is written.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadCheckpoint } from '../../coordinator/checkpoint.js';
import { cleanEnv, CLI, runCli } from '../support/cli.js';
import { waitForStep, waitForText, watch } from '../support/processes.js';

const inCi = process.env.CI === 'true';
const hasPrlimit = spawnSync('prlimit', ['--version']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'batchlab-flood-'));
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const STEPS = 300;
const TOKEN = 'flood-test';
const FLOOD = 400;

/**
 * Keeps `count` connections open from 127.0.0.2 (a loopback address of its own, so the
 * per-address cap is the flood's): even ones send nothing, odd ones half an HTTP upgrade
 * without a token. A closed one is opened again 100 ms later until `stop`.
 */
function flood(port: number, count: number): { connected: () => number; stop: () => void } {
  let connected = 0;
  let stopped = false;
  const sockets = new Set<Socket>();
  const open = (slot: number): void => {
    if (stopped) return;
    const socket = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
    sockets.add(socket);
    socket.on('connect', () => {
      connected++;
      if (slot % 2 === 1)
        socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n');
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      if (!stopped) setTimeout(() => open(slot), 100);
    });
  };
  for (let slot = 0; slot < count; slot++) open(slot);
  return {
    connected: () => connected,
    stop: () => {
      stopped = true;
      for (const s of sockets) s.destroy();
    },
  };
}

const title =
  hasPrlimit || inCi
    ? `a run with ${FLOOD} pre-auth sockets at 256 descriptors finishes with valid checkpoints`
    : `a run with ${FLOOD} pre-auth sockets at 256 descriptors finishes with valid checkpoints (skipped: prlimit not installed; apt-get install util-linux)`;

describe('pre-auth connection flood', () => {
  it.skipIf(!hasPrlimit && !inCi)(
    title,
    async () => {
      expect(hasPrlimit, 'prlimit is required under CI=true (util-linux)').toBe(true);
      const checkpoints = join(dir, 'checkpoints');
      const coordinator = spawn(
        'prlimit',
        [
          '--nofile=256:256',
          process.execPath,
          CLI,
          'coordinator',
          '--host',
          '127.0.0.1',
          '--port',
          '0',
          '--metrics-port',
          '0',
          '--token',
          TOKEN,
          '--dataset',
          'synthetic',
          '--steps',
          String(STEPS),
          '--global-batch',
          '32',
          '--micro-batch',
          '16',
          '--hidden',
          '16',
          '--min-workers',
          '2',
          '--checkpoint-dir',
          checkpoints,
          '--checkpoint-every',
          '5',
        ],
        { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.push(coordinator);
      const run = watch(coordinator);
      let exited = false;
      void run.exit.then(() => (exited = true));
      const port = Number((await waitForText(run.output, /listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
      const workers = [1, 2].map(() =>
        runCli(
          ['worker', '--connect', `ws://127.0.0.1:${port}`, '--token', TOKEN, '--metrics-port', 'off'],
          {},
          300_000,
        ),
      );
      await waitForStep(run.output, 2);
      const attack = flood(port, FLOOD);
      try {
        // Every socket connected at least once, most of them more than once, while training goes on.
        const deadline = Date.now() + 120_000;
        while (attack.connected() < 2 * FLOOD && !exited && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 100));
        expect(attack.connected()).toBeGreaterThanOrEqual(FLOOD);
        expect(await run.exit, run.output()).toBe(0);
      } finally {
        attack.stop();
      }
      for (const worker of await Promise.all(workers)) expect(worker.code, worker.stderr).toBe(0);
      expect(run.output()).toMatch(/closed connections before hello \(\d+ pending_limit/);
      expect(run.output()).not.toMatch(/EMFILE/);
      const checkpoint = await loadCheckpoint(checkpoints);
      expect(checkpoint.stepsDone).toBe(STEPS);
    },
    300_000,
  );
});
