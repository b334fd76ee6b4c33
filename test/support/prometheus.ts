// A real Prometheus (Debian's package) for integration tests: started on a free loopback port
// with a temporary config and storage, queried through its HTTP API.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export const PROMETHEUS_BIN = ['/usr/bin/prometheus', '/usr/local/bin/prometheus'].find((p) => existsSync(p)) ?? null;

/** A free TCP port on 127.0.0.1 (closed again before returning). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Grafana's variables in a panel query, replaced as Grafana would for "All" and a short time range. */
export function expandGrafanaVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '10s')
    .replaceAll('$__range', '2m')
    .replaceAll('$__interval', '2s')
    .replaceAll('$instance', '.*')
    .replaceAll('$worker', '.*');
}

export interface PrometheusServer {
  url: string;
  process: ChildProcess;
  /** Instant query; returns the result vector (throws on an API error). */
  query(expr: string, time?: number): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  stop(): Promise<void>;
}

/** Starts Prometheus scraping the file_sd targets in `targetsFiles` every second. */
export async function startPrometheus(dir: string, ...targetsFiles: string[]): Promise<PrometheusServer> {
  if (!PROMETHEUS_BIN) throw new Error('prometheus is not installed (apt-get install prometheus)');
  const port = await freePort();
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      'scrape_configs:',
      '  - job_name: batchlab',
      '    file_sd_configs:',
      `      - files: [${targetsFiles.map((f) => `'${f}'`).join(', ')}]`,
      '        refresh_interval: 1s',
      '',
    ].join('\n'),
  );
  const child = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  child.stderr.on('data', (d) => (log = (log + d).slice(-4000)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${log}`);
    try {
      if ((await fetch(`${url}/-/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`prometheus not ready within 30 s: ${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    process: child,
    async query(expr, time) {
      const params = new URLSearchParams({ query: expr, ...(time ? { time: String(time) } : {}) });
      const body = (await (await fetch(`${url}/api/v1/query?${params.toString()}`)).json()) as {
        status: string;
        error?: string;
        data: { resultType: string; result: never[] };
      };
      if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
      return body.data.result;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
