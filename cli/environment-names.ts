// Which BATCHLAB_* environment variables a batchlab process accepts. A misspelt option variable
// would otherwise be ignored and the run would train with the default, so every BATCHLAB_* name
// must be one of: an option's variable of any command (a pod may carry another command's, e.g. a
// worker's BATCHLAB_CONNECT on a coordinator), one of batchlab's own knobs (BATCHLAB_DEBUG), or a
// variable Kubernetes injects for a Service named batchlab-<name>. Anything else is refused, with
// the closest option variable suggested when there is one.

import { BatchlabError } from '../shared/errors.js';

const PREFIX = 'BATCHLAB_';

/**
 * BATCHLAB_* names that are no option but are batchlab's: read by the code (BATCHLAB_DEBUG,
 * BATCHLAB_PYTHON), by scripts (BATCHLAB_CLI_JS), by Compose and Grafana (the image names, the
 * Prometheus URL). A test checks that every BATCHLAB_* name in the repository is accepted.
 */
export const OTHER_VARIABLES: readonly string[] = [
  'BATCHLAB_DEBUG',
  'BATCHLAB_PYTHON',
  'BATCHLAB_CLI_JS',
  'BATCHLAB_IMAGE',
  'BATCHLAB_GPU_IMAGE',
  'BATCHLAB_WEBGPU_IMAGE',
  'BATCHLAB_PROMETHEUS_URL',
];

/**
 * Whether `name` is a variable Kubernetes injects into every pod for a Service named
 * batchlab-<svc> (service links): <SVC>_SERVICE_HOST, <SVC>_SERVICE_PORT[_<PORT NAME>],
 * <SVC>_PORT (tcp://ip:port), <SVC>_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]. A bare <SVC>_PORT is
 * recognised by its value only, so that BATCHLAB_METRIC_PORT=9400 is still a misspelling.
 */
export function isServiceLink(name: string, value: string): boolean {
  if (!name.startsWith(PREFIX)) return false;
  const rest = name.slice(PREFIX.length);
  if (/^(?:[A-Z0-9_]+_)?SERVICE_(?:HOST|PORT(?:_[A-Z0-9_]+)?)$/.test(rest)) return true;
  if (/^(?:[A-Z0-9_]+_)?PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?$/.test(rest)) return true;
  return /^[A-Z0-9_]+_PORT$/.test(rest) && /^(?:tcp|udp|sctp):\/\//.test(value);
}

/** Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * How far `given` is from `known` (both without the prefix), or null when it is not close: a
 * few edits for its length (one per four letters, at least one), the same letters without
 * underscores (DATADIR), or one the other's start or end with a short rest (GLOBAL_BATCHSIZE).
 */
function closeness(given: string, known: string): number | null {
  const distance = editDistance(given, known);
  if (distance <= Math.max(1, Math.floor(Math.max(given.length, known.length) / 4))) return distance;
  if (given.replaceAll('_', '') === known.replaceAll('_', '')) return distance;
  const [short, long] = given.length < known.length ? [given, known] : [known, given];
  const affix = long.startsWith(short) || long.endsWith(short);
  return affix && short.length >= 4 && short.length * 2 >= long.length ? distance : null;
}

/** The accepted variable closest to `name`, or null when none is close. */
export function closestVariable(name: string, accepted: readonly string[]): string | null {
  // BATCHLAB_global-batch is BATCHLAB_GLOBAL_BATCH written another way.
  const given = name.slice(PREFIX.length).toUpperCase().replaceAll('-', '_');
  let best: { variable: string; distance: number } | null = null;
  for (const variable of accepted) {
    const distance = closeness(given, variable.slice(PREFIX.length));
    if (distance !== null && (best === null || distance < best.distance)) best = { variable, distance };
  }
  return best?.variable ?? null;
}

/** A BATCHLAB_* variable that batchlab does not know (exit 2, like a bad option). */
export class UnknownVariableError extends BatchlabError {
  constructor(
    readonly variable: string,
    readonly suggestion: string | null,
  ) {
    const hint = suggestion
      ? `did you mean ${suggestion}?`
      : 'options are set by BATCHLAB_<OPTION> (BATCHLAB_GLOBAL_BATCH for --global-batch, see --help); unset or rename it';
    super('BAD_OPTION', `${variable} is not a batchlab variable; ${hint}`);
    this.name = 'UnknownVariableError';
  }
}

/**
 * Throws UnknownVariableError for the first BATCHLAB_* variable of `env` (in name order) that is
 * none of `optionVariables` (every command's), batchlab's other variables, or a Service link.
 */
export function checkVariableNames(env: NodeJS.ProcessEnv, optionVariables: readonly string[]): void {
  const accepted = new Set([...optionVariables, ...OTHER_VARIABLES]);
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith(PREFIX) || accepted.has(name) || isServiceLink(name, env[name] ?? '')) continue;
    throw new UnknownVariableError(name, closestVariable(name, optionVariables));
  }
}
