// The HTTP endpoint every batchlab process serves: /metrics (Prometheus text format), /healthz
// (liveness: 503 with the reason when the event loop or the role's own check finds a problem) and
// /readyz (readiness: 503 until the role's check passes). docs/METRICS.md states what each judges.

import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { EventLoopLag, firstProblem, type HealthCheck } from './health.js';

/** Connections the endpoint holds at once; more are closed as they arrive. */
export const METRICS_MAX_CONNECTIONS = 64;
/** A connection idle this long (no request, or a request that stalls) is closed. */
export const METRICS_IDLE_TIMEOUT_MS = 10_000;

export interface MetricsServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

/** What /healthz and /readyz answer for one process. */
export interface HealthChecks {
  /** Fields of both answers (role, run id, …). */
  details: () => Record<string, unknown>;
  /** /healthz answers 503 with the first problem; the event loop is checked before these. */
  live?: readonly HealthCheck[];
  /** /readyz answers 503 with its problem; 200 when absent. */
  ready?: HealthCheck;
}

/** Serves `registry` on `host:port` (port 0: any free port), with /healthz and /readyz judged by `health`. */
export async function startMetricsServer(
  registry: Registry,
  port: number,
  host: string,
  health: HealthChecks,
): Promise<MetricsServer> {
  const loop = new EventLoopLag().start();
  const answer = (res: ServerResponse, problem: string | null, ok: string, failed: string): void => {
    res.statusCode = problem === null ? 200 : 503;
    res.setHeader('Content-Type', 'application/json');
    const verdict = problem === null ? { status: ok } : { status: failed, reason: problem };
    res.end(`${JSON.stringify({ ...verdict, ...health.details() })}\n`);
  };
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.setHeader('Content-Type', registry.contentType);
          res.end(text);
        },
        (error: Error) => {
          res.statusCode = 500;
          res.end(error.message);
        },
      );
    } else if (path === '/healthz') {
      answer(res, firstProblem([loop.check, ...(health.live ?? [])]), 'ok', 'unhealthy');
    } else if (path === '/readyz') {
      answer(res, health.ready?.() ?? null, 'ready', 'not ready');
    } else {
      res.statusCode = 404;
      res.end('batchlab serves /metrics, /healthz and /readyz\n');
    }
  });
  // Scrapers need a connection or two: a flood of idle or slow sockets is capped and timed out,
  // so it cannot take the descriptors the rest of the process needs (checkpoints, workers).
  server.maxConnections = METRICS_MAX_CONNECTIONS;
  server.setTimeout(METRICS_IDLE_TIMEOUT_MS, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  }).catch((error: unknown) => {
    loop.stop();
    throw error;
  });
  const actual = (server.address() as AddressInfo).port;
  let closing: Promise<void> | null = null;
  return {
    port: actual,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actual}/metrics`,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        loop.stop();
        server.closeAllConnections();
        server.close(() => resolve());
      })),
  };
}
