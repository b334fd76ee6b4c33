// The metrics endpoint holds a bounded number of connections: one over the cap is closed as it
// arrives, and the endpoint still answers once a place is free.

import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createRegistry } from '../../shared/metrics.js';
import { METRICS_MAX_CONNECTIONS, startMetricsServer, type MetricsServer } from '../../shared/metrics-server.js';

let server: MetricsServer | null = null;
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await server?.close();
  server = null;
});

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    sockets.push(socket);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('metrics endpoint', () => {
  it(`closes connections beyond ${METRICS_MAX_CONNECTIONS} at once and serves again when one leaves`, async () => {
    server = await startMetricsServer(createRegistry('coordinator'), 0, '127.0.0.1', { details: () => ({}) });
    const port = server.port;
    const held: Socket[] = [];
    for (let i = 0; i < METRICS_MAX_CONNECTIONS; i++) held.push(await open(port));
    const extra = await open(port);
    await new Promise<void>((resolve) => extra.once('close', () => resolve()));
    held[0]!.destroy();
    await new Promise<void>((resolve) => held[0]!.once('close', () => resolve()));
    // The server sees the close asynchronously: retry until a request gets an answer.
    for (;;) {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null);
      if (response) {
        expect(await response.json()).toMatchObject({ status: 'ok' });
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  });
});
