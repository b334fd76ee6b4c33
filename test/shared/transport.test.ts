import { describe, expect, it } from 'vitest';
import { isLoopbackHost, useZeroMask } from '../../shared/transport.js';

describe('client masking choice', () => {
  it('recognises loopback hosts', () => {
    for (const h of ['localhost', '127.0.0.1', '127.3.2.1', '::1', '[::1]']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['10.0.0.1', 'example.org', '128.0.0.1', '127.0.0.1.nip.io', '::2'])
      expect(isLoopbackHost(h)).toBe(false);
  });

  it('auto uses the zero mask only on loopback or under TLS', () => {
    expect(useZeroMask('auto', 'ws://127.0.0.1:7070')).toBe(true);
    expect(useZeroMask('auto', 'ws://localhost:7070')).toBe(true);
    expect(useZeroMask('auto', 'ws://[::1]:7070')).toBe(true);
    expect(useZeroMask('auto', 'wss://coordinator.cluster:7070')).toBe(true);
    expect(useZeroMask('auto', 'ws://coordinator.cluster:7070')).toBe(false);
    expect(useZeroMask('auto', 'ws://10.1.2.3:7070')).toBe(false);
  });

  it('random and zero override the address', () => {
    expect(useZeroMask('random', 'ws://127.0.0.1:7070')).toBe(false);
    expect(useZeroMask('zero', 'ws://10.1.2.3:7070')).toBe(true);
  });
});
