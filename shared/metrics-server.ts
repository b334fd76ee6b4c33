// The HTTP endpoint every batchlab process serves: /metrics (Prometheus text format) and /healthz.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** Connections the endpoint holds at once; more are closed as they arrive. */
export const METRICS_MAX_CONNECTIONS = 64;
/** A connection idle this long (no request, or a request that stalls) is closed. */
export const METRICS_IDLE_TIMEOUT_MS = 10_000;

export interface MetricsServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Serves `registry` on `host:port` (port 0: any free port). `health` fills /healthz. */
export async function startMetricsServer(
  registry: Registry,
  port: number,
  host: string,
  health: () => Record<string, unknown>,
): Promise<MetricsServer> {
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
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ status: 'ok', ...health() }));
    } else {
      res.statusCode = 404;
      res.end('batchlab serves /metrics and /healthz\n');
    }
  });
  // Scrapers need a connection or two: a flood of idle or slow sockets is capped and timed out,
  // so it cannot take the descriptors the rest of the process needs (checkpoints, workers).
  server.maxConnections = METRICS_MAX_CONNECTIONS;
  server.setTimeout(METRICS_IDLE_TIMEOUT_MS, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  let closing: Promise<void> | null = null;
  return {
    port: actual,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actual}/metrics`,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      })),
  };
}
