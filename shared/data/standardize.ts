// Pixel standardization: one scalar mean and standard deviation taken from the training
// pixels, applied as (x - mean) / std to both splits.

/** Scalar statistics used to standardize pixels (in units of pixel/255 for byte images). */
export interface PixelStats {
  mean: number;
  std: number;
}

/** Mean and standard deviation of byte pixels scaled to [0, 1] (computed from a histogram). */
export function byteStats(pixels: Uint8Array): PixelStats {
  // Four interleaved histograms: runs of equal pixels (e.g. black background) would otherwise
  // make each increment wait for the previous one. Int32 counts are exact up to 2^31 per lane.
  const lanes = new Int32Array(4 * 256);
  const n = pixels.length;
  const whole = n - (n % 4);
  for (let i = 0; i < whole; i += 4) {
    lanes[pixels[i]!]!++;
    lanes[256 + pixels[i + 1]!]!++;
    lanes[512 + pixels[i + 2]!]!++;
    lanes[768 + pixels[i + 3]!]!++;
  }
  for (let i = whole; i < n; i++) lanes[pixels[i]!]!++;
  let sum = 0;
  let sumSquares = 0;
  for (let v = 0; v < 256; v++) {
    const count = lanes[v]! + lanes[256 + v]! + lanes[512 + v]! + lanes[768 + v]!;
    const x = v / 255;
    sum += count * x;
    sumSquares += count * x * x;
  }
  return finish(sum, sumSquares, pixels.length);
}

/** Mean and standard deviation of float pixel values (accumulated in double precision). */
export function floatStats(values: Float32Array): PixelStats {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]!;
  const mean = values.length > 0 ? sum / values.length : 0;
  let squares = 0;
  for (let i = 0; i < values.length; i++) {
    const d = values[i]! - mean;
    squares += d * d;
  }
  return { mean, std: safeStd(values.length > 0 ? Math.sqrt(squares / values.length) : 0) };
}

/** Standardizes byte pixels: `(p / 255 - mean) / std`, via a 256-entry lookup table. */
export function standardizeBytes(pixels: Uint8Array, stats: PixelStats): Float32Array {
  const table = new Float32Array(256);
  for (let v = 0; v < 256; v++) table[v] = (v / 255 - stats.mean) / stats.std;
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = table[pixels[i]!]!;
  return out;
}

/** Standardizes float pixels in place: `(x - mean) / std`. Returns `values`. */
export function standardizeFloatsInPlace(values: Float32Array, stats: PixelStats): Float32Array {
  const { mean, std } = stats;
  for (let i = 0; i < values.length; i++) values[i] = (values[i]! - mean) / std;
  return values;
}

function finish(sum: number, sumSquares: number, n: number): PixelStats {
  if (n === 0) return { mean: 0, std: 1 };
  const mean = sum / n;
  const variance = Math.max(0, sumSquares / n - mean * mean);
  return { mean, std: safeStd(Math.sqrt(variance)) };
}

/** A constant image set has std 0; use 1 so standardization only centers it. */
function safeStd(std: number): number {
  return std > 1e-12 ? std : 1;
}
