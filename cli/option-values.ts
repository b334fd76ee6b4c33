// The validators that turn one raw option value into a typed value: undefined when the option is
// absent, an OptionError naming the option, the value and what is accepted when it is bad.

import { OptionError } from '../shared/errors.js';
import type { LrWindow } from '../shared/lr-schedule.js';

/** Option name → what yargs (or an in-process caller) gave: strings, booleans, or nothing. */
export type RawOptions = Record<string, unknown>;

/** Node timers hold at most 2^31 − 1 ms. */
const MAX_TIMER_SECONDS = 2_147_483;

/** The option's text, trimmed; undefined when absent. Refuses an option given more than once. */
export function readText(raw: RawOptions, option: string): string | undefined {
  const v = raw[option];
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) throw new OptionError(option, v, 'a single value (the option was given more than once)');
  if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean')
    throw new OptionError(option, v, 'a single value');
  return String(v).trim();
}

/** A boolean flag: on only when yargs parsed it as true. */
export function readFlag(raw: RawOptions, option: string): boolean {
  return raw[option] === true;
}

/**
 * --resume: absent or false/0/no → false; given alone, or true/1/yes (BATCHLAB_RESUME=true) → true
 * (a checkpoint must exist); `auto` → continue from a checkpoint when there is one, else start fresh.
 */
export function readResume(raw: RawOptions, option: string): boolean | 'auto' {
  const t = readText(raw, option);
  if (t === undefined) return false;
  const lowered = t.toLowerCase();
  if (['', 'true', '1', 'yes'].includes(lowered)) return true;
  if (['false', '0', 'no'].includes(lowered)) return false;
  if (lowered === 'auto') return 'auto';
  throw new OptionError(
    option,
    t,
    'nothing (continue from a checkpoint that must exist), auto (continue when there is one, else start fresh), ' +
      'or true or false',
  );
}

/** An integer in [min, max]. */
export function readInteger(
  raw: RawOptions,
  option: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  const n = /^[+-]?\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new OptionError(option, t, `an integer from ${min}${max === Number.MAX_SAFE_INTEGER ? ' up' : ` to ${max}`}`);
  }
  return n;
}

/** A finite number > min (exclusive) or >= min (inclusive), and < max when given. */
export function readDecimal(
  raw: RawOptions,
  option: string,
  min: number,
  inclusive: boolean,
  max = Infinity,
): number | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  const n = t === '' ? NaN : Number(t);
  const ok = Number.isFinite(n) && (inclusive ? n >= min : n > min) && n < max;
  if (!ok) {
    const below = Number.isFinite(max) ? ` and < ${max}` : '';
    throw new OptionError(option, t, `a number ${inclusive ? '>=' : '>'} ${min}${below}`);
  }
  return n;
}

/** One of `names`, exactly. */
export function readOneOf<T extends string>(raw: RawOptions, option: string, names: readonly T[]): T | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  if (!(names as readonly string[]).includes(t)) throw new OptionError(option, t, `one of ${names.join(', ')}`);
  return t as T;
}

/**
 * --model: one of the built-in `names`, or a file: a value ending in `.json` or holding a path
 * separator is the path of a TensorFlow.js layers model.json (whether it exists is checked with
 * the other input paths).
 */
export function readModel(raw: RawOptions, option: string, names: readonly string[]): string | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  if (names.includes(t) || t.endsWith('.json') || t.includes('/') || t.includes('\\')) return t;
  throw new OptionError(
    option,
    t,
    `one of ${names.join(', ')}, or the path of a TensorFlow.js layers model.json (ending in .json)`,
  );
}

/** Comma-separated positive integers, e.g. 256,128. */
export function readIntegerList(raw: RawOptions, option: string, max = 65536): number[] | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  const parts = t.split(',').map((p) => p.trim());
  const values = parts.map(Number);
  const bad = (v: number, i: number): boolean =>
    !/^\d+$/.test(parts[i]!) || !Number.isSafeInteger(v) || v < 1 || v > max;
  if (parts.length === 0 || values.some(bad)) {
    throw new OptionError(option, t, `comma-separated positive integers up to ${max}, e.g. 256,128`);
  }
  return values;
}

/** Comma-separated numbers > 0 and < 100 (learning rates). */
export function readDecimalList(raw: RawOptions, option: string): number[] | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  const values = t.split(',').map((p) => (p.trim() === '' ? NaN : Number(p)));
  if (values.some((v) => !Number.isFinite(v) || v <= 0 || v >= 100)) {
    throw new OptionError(option, t, 'comma-separated numbers > 0 and < 100, e.g. 0.01,0.03,0.1');
  }
  return values;
}

/** A TCP port from 0 to 65535 (0: any free port). */
export function readPort(raw: RawOptions, option: string): number | undefined {
  return readInteger(raw, option, 0, 65535);
}

/** A TCP port as for {@link readPort}, or null for "off" (no listener). */
export function readPortOrOff(raw: RawOptions, option: string): number | null | undefined {
  return readText(raw, option) === 'off' ? null : readPort(raw, option);
}

/** A duration given in seconds (by default > 0 and short enough for a Node timer), returned in whole milliseconds. */
export function readMilliseconds(
  raw: RawOptions,
  option: string,
  min = 0,
  inclusive = false,
  max = MAX_TIMER_SECONDS,
): number | undefined {
  const s = readDecimal(raw, option, min, inclusive, max);
  return s === undefined ? undefined : Math.round(s * 1000);
}

/** START:END:FACTOR windows, comma-separated; an empty list when absent. */
export function readLrWindows(raw: RawOptions, option: string): LrWindow[] {
  const t = readText(raw, option);
  if (t === undefined) return [];
  return t.split(',').map((part) => {
    const m = /^(\d+):(\d+):([0-9.eE+-]+)$/.exec(part.trim());
    const window = m ? { start: Number(m[1]), end: Number(m[2]), factor: Number(m[3]) } : null;
    if (!window || window.end <= window.start || !(window.factor > 0) || !Number.isFinite(window.factor)) {
      throw new OptionError(option, part, 'START:END:FACTOR with END > START and FACTOR > 0, e.g. 200:400:0.25');
    }
    return window;
  });
}

/** Slowdown factors from 1 to 1000, at most one per worker; an empty list when absent or empty. */
export function readSlowdownList(raw: RawOptions, option: string, workers: number): number[] {
  const t = readText(raw, option);
  if (t === undefined || t === '') return [];
  const values = t.split(',').map((p) => (p.trim() === '' ? NaN : Number(p)));
  if (values.length > workers || values.some((v) => !Number.isFinite(v) || v < 1 || v > 1000)) {
    const accepted = `at most ${workers} comma-separated factors from 1 to 1000 (one per worker), e.g. 1,3`;
    throw new OptionError(option, t, accepted);
  }
  return values;
}

/** An integer from `min` to `max`, or `auto`. */
export function readIntegerOrAuto(
  raw: RawOptions,
  option: string,
  min: number,
  max: number,
): number | 'auto' | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  if (t.toLowerCase() === 'auto') return 'auto';
  const n = /^[+-]?\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new OptionError(option, t, `an integer from ${min} to ${max}, or auto`);
  return n;
}

const BYTE_UNITS: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, ki: 2 ** 10, mi: 2 ** 20, gi: 2 ** 30 };

/** A size in bytes >= `min`: an integer, optionally with a unit (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024; a trailing B is allowed). */
export function readBytes(raw: RawOptions, option: string, min: number): number | undefined {
  const t = readText(raw, option);
  if (t === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]i?)?b?$/i.exec(t);
  const n = m ? Math.round(Number(m[1]) * BYTE_UNITS[(m[2] ?? '').toLowerCase()]!) : NaN;
  if (!Number.isSafeInteger(n) || n < min)
    throw new OptionError(option, t, `a size in bytes of at least ${min}, e.g. 500000000, 500M or 512MiB`);
  return n;
}
