// Connections before hello: capped in total and per source address (one over is closed at
// once), freed by a hello, and closed when the pre-hello deadline passes. The limits follow
// the descriptor limit.

import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  openFileLimit,
  pendingLimitsFor,
  PendingConnections,
  type PendingRefusal,
} from '../../coordinator/pending-connections.js';

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function listen(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

/** Connects from `from`; resolves with the socket and a promise of its close, once the server has seen it. */
async function open(port: number, from: string, server: Server): Promise<{ socket: Socket; closed: Promise<void> }> {
  const seen = new Promise<void>((r) => server.once('connection', () => setImmediate(r)));
  const socket = connect({ host: '127.0.0.1', port, localAddress: from });
  sockets.push(socket);
  socket.on('error', () => {});
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await seen;
  return { socket, closed };
}

describe('PendingConnections', () => {
  it('closes one over the total or per-address cap at once, and frees a place on hello', async () => {
    const { server, port } = await listen();
    const refused: [PendingRefusal, string][] = [];
    const limits = { helloTimeoutMs: 60_000, maxPending: 3, maxPendingPerAddress: 2 };
    const pending = new PendingConnections(server, limits, (reason, address) => refused.push([reason, address]));
    const a1 = await open(port, '127.0.0.2', server);
    await open(port, '127.0.0.2', server);
    const a3 = await open(port, '127.0.0.2', server);
    await a3.closed;
    expect(refused).toEqual([['pending_limit', '127.0.0.2']]);
    await open(port, '127.0.0.3', server);
    expect(pending.size).toBe(3);
    const c1 = await open(port, '127.0.0.4', server);
    await c1.closed;
    expect(refused.at(-1)).toEqual(['pending_limit', '127.0.0.4']);
    // a1 says hello: it no longer counts, so there is room again.
    pending.admit(a1.socket.localAddress, a1.socket.localPort);
    expect(pending.size).toBe(2);
    await open(port, '127.0.0.4', server);
    expect(pending.size).toBe(3);
    expect(refused).toHaveLength(2);
    pending.close();
  });

  it('closes a connection that says nothing before the deadline, and forgets closed ones', async () => {
    const { server, port } = await listen();
    const refused: PendingRefusal[] = [];
    const limits = { helloTimeoutMs: 200, maxPending: 8, maxPendingPerAddress: 8 };
    const pending = new PendingConnections(server, limits, (reason) => refused.push(reason));
    const silent = await open(port, '127.0.0.2', server);
    const leaving = await open(port, '127.0.0.2', server);
    leaving.socket.destroy();
    await leaving.closed;
    await silent.closed;
    expect(refused).toEqual(['handshake_timeout']);
    expect(pending.size).toBe(0);
    pending.close();
  });

  it('sizes the caps from the soft descriptor limit', () => {
    const dir = mkdtempSync(join(tmpdir(), 'batchlab-limits-'));
    try {
      const file = join(dir, 'limits');
      writeFileSync(
        file,
        'Limit                     Soft Limit           Hard Limit           Units     \nMax open files            256                  4096                 files     \n',
      );
      expect(openFileLimit(file)).toBe(256);
      writeFileSync(file, 'Max open files            unlimited            unlimited            files\n');
      expect(openFileLimit(file)).toBeNull();
      expect(openFileLimit(join(dir, 'absent'))).toBeNull();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(pendingLimitsFor(256)).toEqual({ helloTimeoutMs: 10_000, maxPending: 64, maxPendingPerAddress: 16 });
    expect(pendingLimitsFor(20)).toMatchObject({ maxPending: 8, maxPendingPerAddress: 4 });
    expect(pendingLimitsFor(1_048_576)).toMatchObject({ maxPending: 1024, maxPendingPerAddress: 32 });
    expect(pendingLimitsFor(null)).toMatchObject({ maxPending: 256, maxPendingPerAddress: 32 });
  });
});
