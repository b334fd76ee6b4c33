// The masking key a real `batchlab worker` process puts on the wire. A bare TCP server answers
// the WebSocket upgrade itself (RFC 6455 §4.2.2) and reads the first frame's header, which ws
// would otherwise hide: the key must be all zeros on loopback by default, random when asked.

import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startCli } from '../support/cli.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Accepts one upgrade and resolves with the first frame's mask bit and key. */
function firstFrameMask(server: Server): Promise<{ masked: boolean; key: Buffer }> {
  return new Promise((resolve, reject) => {
    server.once('connection', (socket: Socket) => {
      let buffered = Buffer.alloc(0);
      let upgraded = false;
      socket.on('error', reject);
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (!upgraded) {
          const end = buffered.indexOf('\r\n\r\n');
          if (end < 0) return;
          const request = buffered.subarray(0, end).toString();
          const key = /sec-websocket-key:\s*(\S+)/i.exec(request)?.[1];
          if (!key) return reject(new Error(`no Sec-WebSocket-Key in ${request}`));
          const accept = createHash('sha1')
            .update(key + GUID)
            .digest('base64');
          socket.write(
            `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
          );
          upgraded = true;
          buffered = buffered.subarray(end + 4);
        }
        // Frame header: 2 bytes, then 0/2/8 bytes of extended length, then the 4-byte key.
        if (buffered.length < 2) return;
        const lengthCode = buffered[1]! & 0x7f;
        const offset = 2 + (lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0);
        if (buffered.length < offset + 4) return;
        resolve({ masked: (buffered[1]! & 0x80) !== 0, key: Buffer.from(buffered.subarray(offset, offset + 4)) });
        socket.destroy();
      });
    });
  });
}

const children: ReturnType<typeof startCli>[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

async function maskSentBy(extra: string[]): Promise<{ masked: boolean; key: Buffer }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const frame = firstFrameMask(server);
  children.push(
    startCli(
      ['worker', '--connect', `ws://127.0.0.1:${port}`, '--metrics-port', 'off', '--connect-timeout', '5', ...extra],
      { BATCHLAB_TOKEN: 'mask-test' },
    ),
  );
  try {
    return await frame;
  } finally {
    server.close();
  }
}

describe('the WebSocket masking key a worker sends', () => {
  it('is all zeros on loopback by default (ws then skips the XOR on both ends)', async () => {
    const { masked, key } = await maskSentBy([]);
    expect(masked).toBe(true);
    expect([...key]).toEqual([0, 0, 0, 0]);
  }, 30_000);

  it('is random with --client-mask random, even on loopback', async () => {
    // Two connections: a random 4-byte key is zero with probability 2^-32 each.
    const first = await maskSentBy(['--client-mask', 'random']);
    const second = await maskSentBy(['--client-mask', 'random']);
    expect(first.masked).toBe(true);
    expect(first.key.equals(Buffer.alloc(4)) && second.key.equals(Buffer.alloc(4))).toBe(false);
    expect(first.key.equals(second.key)).toBe(false);
  }, 30_000);
});
