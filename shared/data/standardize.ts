// Pixel standardization: a mean and standard deviation taken from the training pixels (one
// scalar pair, or one pair per channel of colour images), applied as (x - mean) / std to both
// splits.

/** Scalar statistics used to standardize pixels (in units of pixel/255 for byte images). */
export interface PixelStats {
  mean: number;
  std: number;
}

/** Statistics per channel (the last axis, e.g. R, G, B of HWC images); one entry for grey images. */
export interface ChannelStats {
  mean: number[];
  std: number[];
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

/**
 * Mean and standard deviation of byte pixels scaled to [0, 1], per channel of interleaved
 * `pixels` (channel = index % channels, as in HWC images), from one histogram per channel.
 */
export function byteChannelStats(pixels: Uint8Array, channels: number): ChannelStats {
  if (channels === 1) {
    const { mean, std } = byteStats(pixels);
    return { mean: [mean], std: [std] };
  }
  if (pixels.length % channels !== 0)
    throw new RangeError(
      `byteChannelStats: ${pixels.length} values are not a whole number of ${channels}-channel pixels`,
    );
  // Consecutive values go to different channels' histograms: no run of equal increments.
  const counts = new Int32Array(channels * 256);
  for (let i = 0, c = 0; i < pixels.length; i++) {
    counts[c * 256 + pixels[i]!]!++;
    c = c + 1 === channels ? 0 : c + 1;
  }
  const perChannel = Array.from({ length: channels }, (_, c) => {
    let sum = 0;
    let sumSquares = 0;
    for (let v = 0; v < 256; v++) {
      const count = counts[c * 256 + v]!;
      const x = v / 255;
      sum += count * x;
      sumSquares += count * x * x;
    }
    return finish(sum, sumSquares, pixels.length / channels);
  });
  return { mean: perChannel.map((s) => s.mean), std: perChannel.map((s) => s.std) };
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

/**
 * Standardizes interleaved byte pixels per channel: `(p / 255 - mean[c]) / std[c]` for channel
 * `c = index % channels`, via one 256-entry lookup table per channel.
 */
export function standardizeByteChannels(pixels: Uint8Array, stats: ChannelStats): Float32Array {
  const channels = stats.mean.length;
  if (channels === 1) return standardizeBytes(pixels, { mean: stats.mean[0]!, std: stats.std[0]! });
  const table = new Float32Array(channels * 256);
  for (let c = 0; c < channels; c++)
    for (let v = 0; v < 256; v++) table[c * 256 + v] = (v / 255 - stats.mean[c]!) / stats.std[c]!;
  const out = new Float32Array(pixels.length);
  for (let i = 0, c = 0; i < pixels.length; i++) {
    out[i] = table[c * 256 + pixels[i]!]!;
    c = c + 1 === channels ? 0 : c + 1;
  }
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
