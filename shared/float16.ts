// IEEE 754 binary16 for the wire (`--wire-dtype f16`): float32 → float16 with round-to-nearest-even,
// and back through a 65,536-entry table. Each frame carries a power-of-two scale chosen from its
// largest magnitude, so gradient sums neither overflow (max 65504) nor sink into subnormals; a
// power of two is applied exactly, so the only rounding is the float16 cast itself.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 bit pattern nearest to `x` (ties to even); ±Infinity past 65504, NaN stays NaN. */
export function float16Bits(x: number): number {
  f32[0] = x;
  return bitsFromFloat32Bits(u32[0]!);
}

function bitsFromFloat32Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
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
  let rounded = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, and past the top gives 0x7c00 = Infinity: both correct.
  if (rem > 0x1000 || (rem === 0x1000 && (rounded & 1) === 1)) rounded++;
  return sign | rounded;
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
  let maxAbs = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]!);
    if (a > maxAbs) maxAbs = a; // NaN never compares greater, so it is skipped
  }
  if (maxAbs === 0 || !Number.isFinite(maxAbs)) return 0;
  const k = 14 - Math.floor(Math.log2(maxAbs));
  // Clamp so 2^k stays a normal float32 (and the result of the shift is exact).
  return Math.max(-100, Math.min(100, k));
}

/** Writes float16(values[i] × 2^scaleExponent) into `out` (same length). */
export function encodeFloat16(values: Float32Array, out: Uint16Array, scaleExponent: number): void {
  if (out.length !== values.length) throw new RangeError(`float16 target has ${out.length} slots for ${values.length} values`);
  const scale = 2 ** scaleExponent;
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]! * scale;
    out[i] = bitsFromFloat32Bits(u32[0]!);
  }
}

/** Reverse of `encodeFloat16`: out[i] = float32(halves[i]) × 2^-scaleExponent. */
export function decodeFloat16(halves: Uint16Array, out: Float32Array, scaleExponent: number): void {
  if (out.length !== halves.length) throw new RangeError(`float32 target has ${out.length} slots for ${halves.length} values`);
  const t = decodeTable();
  const unscale = 2 ** -scaleExponent;
  for (let i = 0; i < halves.length; i++) out[i] = t[halves[i]!]! * unscale;
}
