// The coordinator refuses peers without the token in the HTTP upgrade (401, before any
// WebSocket exists) and trains with a worker that has it, found through MASTER_ADDR/MASTER_PORT.

import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
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

/** Whether a TCP connection to host:port is accepted. */
function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

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

function startCoordinator(extra: string[]): {
  child: ChildProcess;
  exit: Promise<number | null>;
  output: () => string;
} {
  const child = startCli([
    'coordinator',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--dataset',
    'synthetic',
    '--metrics-port',
    'off',
    '--global-batch',
    '32',
    '--micro-batch',
    '16',
    '--hidden',
    '16',
    ...extra,
  ]);
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
    // Almost right: a prefix, an extension, another case, inner padding, another scheme, an empty token.
    // (Trailing spaces are not a case: HTTP strips them from header values before anyone sees them.)
    for (const almost of [
      'Bearer s3cre',
      'Bearer s3cret!',
      'Bearer S3cret',
      'Bearer  s3cret',
      'Basic s3cret',
      'Bearer ',
      'Bearers3cret',
    ]) {
      expect(await upgradeStatus(port, { authorization: almost }), almost).toBe(401);
    }

    const intruder = await runCli([
      'worker',
      '--connect',
      `ws://127.0.0.1:${port}`,
      '--token',
      'wrong',
      '--connect-timeout',
      '5',
    ]);
    expect(intruder.code).not.toBe(0);
    // The refusal itself: a bare /401/ also matches a start-up line such as "metrics at http://0.0.0.0:34012/metrics".
    expect(intruder.stderr).toMatch(/\[AUTH_FAILED\] coordinator refused the connection: HTTP 401\b/);

    // Launchers (torchrun, Kubeflow, Slurm recipes) set MASTER_ADDR/MASTER_PORT; the token comes from the environment.
    const worker = await runCli(['worker'], {
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      BATCHLAB_TOKEN: 's3cret',
    });
    expect(worker.code, worker.stderr).toBe(0);
    expect(await coordinator.exit).toBe(0);
    expect(coordinator.output()).toMatch(/refused a connection .*missing or wrong token/);
    const summary = JSON.parse(readFileSync(report, 'utf8'));
    expect(summary).toMatchObject({ steps: 5, samples: 5 * 32, workers: 1 });
  }, 120_000);

  it('listens on 127.0.0.1 only with --insecure and no --host', async () => {
    const coordinator = startCli(['coordinator', '--insecure', '--port', '0', '--dataset', 'synthetic']);
    children.push(coordinator);
    const [, host, port] = (await waitForOutput(coordinator, /listening on ws:\/\/([^:]+):(\d+)/)) as string[];
    expect(host).toBe('127.0.0.1');
    // Reachable on loopback; on this host's other addresses (if it has any) nothing listens.
    expect(await reachable('127.0.0.1', Number(port))).toBe(true);
    const external = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal);
    if (external) expect(await reachable(external.address, Number(port)), external.address).toBe(false);
  });

  it('refuses to start without a token unless --insecure is given', async () => {
    const result = await runCli(['coordinator', '--port', '0', '--dataset', 'synthetic']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--token/);
    expect(result.stderr).toMatch(/--insecure/);
  });

  // openssl makes the certificate. Without it the case is skipped, with the reason in its name,
  // except under CI=true, where a missing openssl is a failure.
  const openssl = ['/usr/bin/openssl', '/usr/local/bin/openssl'].find((p) => existsSync(p)) ?? null;
  const inCi = process.env.CI === 'true';
  const tls =
    'trains over wss:// with a self-signed certificate the worker trusts through --ca, and refuses it without';
  it.skipIf(!openssl && !inCi)(
    openssl || inCi ? tls : `${tls} (skipped: openssl not installed to make a certificate; apt-get install openssl)`,
    async () => {
      expect(openssl, 'openssl is required under CI=true (apt-get install openssl)').not.toBeNull();
      const cert = join(dir, 'cert.pem');
      const key = join(dir, 'key.pem');
      execFileSync(
        openssl!,
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=localhost',
          '-addext',
          'subjectAltName=IP:127.0.0.1,DNS:localhost',
          '-keyout',
          key,
          '-out',
          cert,
        ],
        { stdio: 'ignore' },
      );
      const report = join(dir, 'tls-report.json');
      const coordinator = startCoordinator([
        '--token',
        's3cret',
        '--steps',
        '5',
        '--report',
        report,
        '--tls-cert',
        cert,
        '--tls-key',
        key,
      ]);
      const port = Number((await waitForOutput(coordinator.child, /listening on wss:\/\/127\.0\.0\.1:(\d+)/))[1]);

      const untrusting = await runCli([
        'worker',
        '--connect',
        `wss://127.0.0.1:${port}`,
        '--token',
        's3cret',
        '--connect-timeout',
        '2',
        '--metrics-port',
        'off',
      ]);
      expect(untrusting.code).not.toBe(0);
      expect(untrusting.stderr).toMatch(/self-signed certificate|unable to verify/);

      const plain = await runCli([
        'worker',
        '--connect',
        `ws://127.0.0.1:${port}`,
        '--token',
        's3cret',
        '--connect-timeout',
        '2',
        '--metrics-port',
        'off',
      ]);
      expect(plain.code).not.toBe(0);

      const trusting = await runCli(
        ['worker', '--connect', `wss://127.0.0.1:${port}`, '--ca', cert, '--metrics-port', 'off'],
        { BATCHLAB_TOKEN: 's3cret' },
      );
      expect(trusting.code, trusting.stderr).toBe(0);
      expect(await coordinator.exit).toBe(0);
      expect(JSON.parse(readFileSync(report, 'utf8'))).toMatchObject({ steps: 5, samples: 5 * 32 });

      // The sharded reducer under TLS: workers with a peer certificate exchange over wss://; a
      // worker without one makes the run fall back to the star, which the coordinator's TLS covers.
      for (const [tag, peerTls, reducer] of [
        ['wss-peers', ['--peer-tls-cert', cert, '--peer-tls-key', key], 'sharded'],
        ['plain-peers', [], 'star'],
      ] as const) {
        const tagReport = join(dir, `${tag}.json`);
        const sharded = startCoordinator([
          ...['--token', 's3cret', '--steps', '5', '--reducer', 'sharded', '--min-workers', '2'],
          ...['--report', tagReport, '--tls-cert', cert, '--tls-key', key],
        ]);
        const shardedPort = Number((await waitForOutput(sharded.child, /listening on wss:\/\/127\.0\.0\.1:(\d+)/))[1]);
        const workers = [1, 2].map(() =>
          runCli(
            [
              'worker',
              '--connect',
              `wss://127.0.0.1:${shardedPort}`,
              '--ca',
              cert,
              '--metrics-port',
              'off',
              ...peerTls,
            ],
            { BATCHLAB_TOKEN: 's3cret' },
          ),
        );
        for (const w of await Promise.all(workers)) expect(w.code, w.stderr).toBe(0);
        expect(await sharded.exit, sharded.output()).toBe(0);
        expect(JSON.parse(readFileSync(tagReport, 'utf8')), tag).toMatchObject({ steps: 5, reducer });
        if (reducer === 'sharded')
          for (const w of await Promise.all(workers))
            expect(w.stderr).toMatch(/advertised as wss:\/\/127\.0\.0\.1:\d+/);
        else
          expect(sharded.output()).toMatch(
            /peer server is plain ws:\/\/ while the coordinator serves TLS[^\n]*falling back to the star reducer/,
          );
      }
    },
    180_000,
  );
});
