// IEEE 754 binary16 for the wire (`--wire-dtype f16`): float32 → float16 with round-to-nearest-even,
// and back through a 65,536-entry table. Each frame carries a power-of-two scale chosen from its
// largest magnitude, so gradient sums neither overflow (max 65504) nor sink into subnormals; a
// power of two is applied exactly, so the only rounding is the float16 cast itself.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 bit pattern nearest to `x` (ties to even); ±Infinity past 65504, NaN stays NaN. */
export function float16Bits(x: number): number {
  f32[0] = x;
  return halfFromFloat32Bits(u32[0]!, 0);
}

/** Largest |scale exponent| on the wire (PROTOCOL.md); `halfFromFloat32Bits` relies on it. */
const MAX_SCALE_EXPONENT = 100;

/**
 * The float16 bits of float32(value × 2^k) for the float32 with bits `u`, |k| ≤ 100, working on
 * the bits alone: a power of two only moves the exponent, so the product never has to be
 * formed (and a float32 that the product would overflow or underflow lands past float16's
 * range either way). float32 zeros and subnormals give a signed zero: below 2^-126, even × 2^100
 * they stay under 2^-25, half of float16's smallest subnormal.
 */
function halfFromFloat32Bits(u: number, k: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  if (exp === 0) return sign;
  const e = exp - 112 + k; // rebias 127 → 15, then scale by 2^k
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): value = m × 2^-24 with m = full mantissa >> (14 - e).
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let rounded = mant >>> shift;
    if (rem > half || (rem === half && (rounded & 1) === 1)) rounded++;
    return sign | rounded;
  }
  // Ties to even without a branch (gradient bits are random, so a branch would mispredict half the
  // time): add the round bit when a lower bit is set (sticky) or the kept lsb is odd. A carry out
  // of the mantissa bumps the exponent, and past the top gives 0x7c00 = Infinity: both correct.
  const sticky = ((mant & 0xfff) + 0xfff) >>> 12;
  return sign | (((e << 10) | (mant >>> 13)) + ((mant >>> 12) & (sticky | (mant >>> 13)) & 1));
}

let table: Float32Array | null = null;

/** float16 bit pattern → float32 value, for all 65,536 patterns (built on first use, 256 KB). */
function decodeTable(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) table[h] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) table[h] = mant ? NaN : sign * Infinity;
    else table[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return table;
}

/**
 * The exponent k such that `maxAbs × 2^k` lies in [2^14, 2^15): the largest value then uses the
 * top of float16's range with room to spare, and small values keep as many bits as they can.
 * 0 for an all-zero or non-finite array (non-finite values must still reach the receiver as such).
 */
export function float16ScaleExponent(values: Float32Array): number {
  // On the bits: |x|'s bits order like |x| itself, infinity is 0x7f800000 and NaNs lie above it.
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  let maxBits = 0;
  for (let i = 0; i < bits.length; i++) {
    const a = bits[i]! & 0x7fffffff;
    if (a > maxBits && a <= 0x7f800000) maxBits = a; // NaN is skipped
  }
  if (maxBits === 0 || maxBits === 0x7f800000) return 0;
  u32[0] = maxBits;
  const k = 14 - Math.floor(Math.log2(f32[0]!));
  // Clamp so 2^k stays a normal float32 (and the result of the shift is exact).
  return Math.max(-MAX_SCALE_EXPONENT, Math.min(MAX_SCALE_EXPONENT, k));
}

/** Writes float16(values[i] × 2^scaleExponent) into `out` (same length). */
export function encodeFloat16(values: Float32Array, out: Uint16Array, scaleExponent: number): void {
  if (out.length !== values.length)
    throw new RangeError(`float16 target has ${out.length} slots for ${values.length} values`);
  if (!Number.isInteger(scaleExponent) || Math.abs(scaleExponent) > MAX_SCALE_EXPONENT)
    throw new RangeError(
      `float16 scale exponent ${scaleExponent} is not an integer in [-${MAX_SCALE_EXPONENT}, ${MAX_SCALE_EXPONENT}]`,
    );
  // Integer work on the bits only: about 6× faster than forming each scaled float32.
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < bits.length; i++) out[i] = halfFromFloat32Bits(bits[i]!, scaleExponent);
}

/** Reverse of `encodeFloat16`: out[i] = float32(halves[i]) × 2^-scaleExponent. */
export function decodeFloat16(halves: Uint16Array, out: Float32Array, scaleExponent: number): void {
  if (out.length !== halves.length)
    throw new RangeError(`float32 target has ${out.length} slots for ${halves.length} values`);
  const t = decodeTable();
  const unscale = 2 ** -scaleExponent;
  for (let i = 0; i < halves.length; i++) out[i] = t[halves[i]!]! * unscale;
}
