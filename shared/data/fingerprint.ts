// Dataset fingerprints: a cheap FNV-1a 32-bit hash over the dataset's name, shape, counts,
// every label and a strided sample of the raw pixel bytes, so workers can check they hold
// the same data as the coordinator.

/** Raw (pre-standardization) contents of one split, as hashed by {@link datasetFingerprint}. */
export interface RawSplit {
  /** Raw pixel bytes (for float data, the bytes of the Float32Array). */
  pixelBytes: Uint8Array;
  labels: Uint8Array;
  count: number;
}

/** At most this many pixel bytes per split are hashed. */
const PIXEL_SAMPLES = 1 << 16;

/** Incremental FNV-1a 32-bit hash. */
export class Fnv1a32 {
  private hash = 0x811c9dc5;

  /** Hashes every byte of `bytes`. */
  bytes(bytes: Uint8Array): this {
    let h = this.hash;
    for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
    this.hash = h;
    return this;
  }

  /** Hashes about `maxSamples` bytes of `bytes`, evenly strided (odd stride), plus its last byte. */
  strided(bytes: Uint8Array, maxSamples: number): this {
    const stride = Math.max(1, Math.floor(bytes.length / maxSamples)) | 1;
    let h = this.hash;
    for (let i = 0; i < bytes.length; i += stride) h = Math.imul(h ^ bytes[i]!, 0x01000193);
    if (bytes.length > 0) h = Math.imul(h ^ bytes[bytes.length - 1]!, 0x01000193);
    this.hash = h;
    return this;
  }

  /** Hashes a string's UTF-8 bytes followed by a 0 separator. */
  string(text: string): this {
    return this.bytes(new TextEncoder().encode(text)).bytes(new Uint8Array([0]));
  }

  /** Hashes a uint32 as 4 little-endian bytes. */
  uint32(value: number): this {
    return this.bytes(new Uint8Array(new Uint32Array([value >>> 0]).buffer));
  }

  /** The hash as 8 lowercase hex digits. */
  hex(): string {
    return (this.hash >>> 0).toString(16).padStart(8, '0');
  }
}

/**
 * Fingerprints a dataset: name, sample shape, class count, split counts, all labels and a
 * strided sample of each split's raw pixel bytes. Returns 8 hex digits.
 */
export function datasetFingerprint(
  name: string,
  sampleShape: readonly number[],
  numClasses: number,
  train: RawSplit,
  test: RawSplit,
): string {
  const hash = new Fnv1a32().string(name).string(sampleShape.join('x')).uint32(numClasses);
  for (const split of [train, test]) {
    hash.uint32(split.count).bytes(split.labels).strided(split.pixelBytes, PIXEL_SAMPLES);
  }
  return hash.hex();
}
