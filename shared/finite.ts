// A fast finiteness check for gradient bodies: it runs on every reply, on the step's critical path.

/**
 * Whether every value is finite. x * 0 is ±0 for finite x and NaN for ±Inf and NaN, and a sum
 * with a NaN in it is NaN: so one multiply-add per value in four independent sums, about twice
 * as fast as testing each value (this runs on every reply, on the step's critical path).
 */
export function allFinite(values: Float32Array): boolean {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n = values.length;
  const whole = n & ~3;
  let i = 0;
  for (; i < whole; i += 4) {
    s0 += values[i]! * 0;
    s1 += values[i + 1]! * 0;
    s2 += values[i + 2]! * 0;
    s3 += values[i + 3]! * 0;
  }
  for (; i < n; i++) s0 += values[i]! * 0;
  return s0 + s1 + s2 + s3 === 0;
}
