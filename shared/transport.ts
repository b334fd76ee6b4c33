// WebSocket transport settings shared by the worker (client) and the benchmark: client masking.
//
// RFC 6455 makes a client mask every frame with a random key. The mask protects *intermediaries*
// (transparent proxies that could be cache-poisoned by attacker-chosen bytes from a browser
// script), not the payload: it is no encryption. ws skips the XOR on both ends when the key is
// all zeros, which is what lifts loopback throughput from ~0.96 GB/s (bufferutil) to ~1.3 GB/s.
// A batchlab worker is not a browser running untrusted script, but an unknown proxy between
// hosts is still possible on a plain ws:// network path, so the zero key is the default only
// where no intermediary can read the frames: loopback (nothing in between) and wss:// (TLS hides
// the bytes from any proxy).

export type ClientMask = 'auto' | 'random' | 'zero';
export const CLIENT_MASKS: readonly ClientMask[] = ['auto', 'random', 'zero'];

/** True for localhost, 127.0.0.0/8 and ::1. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Whether a worker connecting to `url` uses the all-zero mask under `mode`. */
export function useZeroMask(mode: ClientMask, url: string): boolean {
  if (mode !== 'auto') return mode === 'zero';
  const parsed = new URL(url);
  return parsed.protocol === 'wss:' || isLoopbackHost(parsed.hostname);
}

/** ws client option: fills the 4-byte masking key with zeros (ws then skips the XOR). */
export function zeroMask(mask: Buffer): Buffer {
  return mask.fill(0);
}
