// Coded errors, classified by the recovery they need (Horovod's elastic.py idea), and their one
// translation to exit codes and WebSocket close codes. Callers decide by `code` and `recovery`,
// never by message text.

/** What a caller must do when an error of this class happens. */
export type Recovery = 'retry-step' | 'close-connection' | 'stop-run' | 'fix-input' | 'interrupted';

/** Every error code with the recovery it needs; the codes travel in `error` frames, close reasons and logs. */
const RECOVERY = {
  BAD_OPTION: 'fix-input',
  /** Dataset files absent, truncated or holding bad values: the message names the file and how to get it. */
  BAD_DATA: 'fix-input',
  BAD_FRAME: 'close-connection',
  BAD_MESSAGE: 'close-connection',
  VERSION_MISMATCH: 'close-connection',
  AUTH_FAILED: 'close-connection',
  DATASET_MISMATCH: 'close-connection',
  /** A worker late at the step deadline too many times in a row (--evict-after): refused for good. */
  EVICTED: 'close-connection',
  /** A worker whose memory cannot hold one sample (or its chunk): it leaves, and its work is re-issued. */
  OUT_OF_MEMORY: 'close-connection',
  SHAPE_MISMATCH: 'stop-run',
  NON_FINITE: 'stop-run',
  /** A worker left mid-step: its micro-batches are computed again by others in the same step. */
  WORKER_LOST: 'retry-step',
  /** A worker missed the step deadline: likewise. */
  TIMEOUT: 'retry-step',
  /** One worker's reply had NaN or Inf values: computed again by another worker. */
  NON_FINITE_REPLY: 'retry-step',
  NO_WORKERS: 'stop-run',
  /** Every worker holding the sharded reducer's weights left at once: resume from the last checkpoint. */
  STATE_LOST: 'stop-run',
  CONNECT_FAILED: 'stop-run',
  /** `batchlab data fetch` could not download the archive intact (network, HTTP status, checksum). */
  DOWNLOAD_FAILED: 'stop-run',
  /** SIGINT or SIGTERM: the run stops after saving what it can. */
  INTERRUPTED: 'interrupted',
} as const satisfies Record<string, Recovery>;

/** Stable error codes. */
export type ErrorCode = keyof typeof RECOVERY;

/** Every error code, in the order of the table in docs/PROTOCOL.md. */
export const ERROR_CODES = Object.keys(RECOVERY) as ErrorCode[];

/** Base class: `code` survives JSON and crosses the wire; `recovery` follows from it. */
export class BatchlabError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'BatchlabError';
    this.code = code;
  }
  get recovery(): Recovery {
    return RECOVERY[this.code];
  }
}

/**
 * A command-line or environment option with a value that is not accepted. `source` names where a
 * value that did not come from the command line was set (BATCHLAB_GLOBAL_BATCH, WORLD_SIZE).
 */
export class OptionError extends BatchlabError {
  constructor(
    readonly option: string,
    readonly value: unknown,
    readonly accepted: string,
    readonly source?: string,
  ) {
    const where = source === undefined ? `--${option}` : `${source} (--${option})`;
    super('BAD_OPTION', `${where}: got ${JSON.stringify(value)}; expected ${accepted}`);
    this.name = 'OptionError';
  }

  /** The same refusal, naming `source` as where the value was set. */
  from(source: string): OptionError {
    return new OptionError(this.option, this.value, this.accepted, source);
  }
}

/** A dataset that cannot be loaded as it is on disk (`BAD_DATA`; exit code 2). */
export class DataError extends BatchlabError {
  constructor(message: string) {
    super('BAD_DATA', message);
    this.name = 'DataError';
  }
}

/** A frame or message that fails validation; the connection that sent it is closed. */
export class ProtocolError extends BatchlabError {
  constructor(code: 'BAD_FRAME' | 'BAD_MESSAGE' | 'VERSION_MISMATCH' | 'DATASET_MISMATCH', message: string) {
    super(code, message);
    this.name = 'ProtocolError';
  }
}

/** The run was stopped by a signal (`INTERRUPTED`; exit code 130, as a shell reports SIGINT). */
export function interruptedBy(signal: NodeJS.Signals): BatchlabError {
  return new BatchlabError('INTERRUPTED', `interrupted by ${signal}`);
}

/** The recovery `error` needs; anything that is not a BatchlabError is a crash (stop-run). */
export function recoveryOf(error: unknown): Recovery {
  return error instanceof BatchlabError ? error.recovery : 'stop-run';
}

/** Whether `error` is a BatchlabError with `code`. */
export function hasCode(error: unknown, code: ErrorCode): boolean {
  return error instanceof BatchlabError && error.code === code;
}

const EXIT_CODES: Record<Recovery, number> = {
  'fix-input': 2,
  'close-connection': 3,
  'retry-step': 4,
  'stop-run': 5,
  interrupted: 130,
};

/** Exit code for a process that stops because of `error` (0 is success, 1 is an unexpected crash). */
export function exitCodeFor(error: unknown): number {
  return error instanceof BatchlabError ? EXIT_CODES[error.recovery] : 1;
}

/** The code a `shutdown` carries when the coordinator failed with an error that has none (a crash). */
export const INTERNAL_ERROR_CODE = 'INTERNAL';

/** Exit code for a code received over the wire: its recovery's, or 1 for a code this version does not know. */
export function exitCodeForCode(code: string): number {
  return Object.hasOwn(RECOVERY, code) ? EXIT_CODES[RECOVERY[code as ErrorCode]] : 1;
}

/** WebSocket close code (4000–4999 is the application range) for an error that ends a connection. */
export function closeCodeFor(code: ErrorCode): number {
  const codes: Partial<Record<ErrorCode, number>> = {
    // A worker whose settings cannot serve the run (e.g. --max-chunk below a batch-norm micro-batch).
    BAD_OPTION: 4412,
    BAD_FRAME: 4400,
    BAD_MESSAGE: 4400,
    VERSION_MISMATCH: 4426,
    AUTH_FAILED: 4401,
    DATASET_MISMATCH: 4409,
    EVICTED: 4408,
    OUT_OF_MEMORY: 4507,
    SHAPE_MISMATCH: 4422,
    NON_FINITE: 4422,
  };
  return codes[code] ?? 4500;
}

/** One log line for an error: code first so it can be grepped. */
export function describeError(error: unknown): string {
  if (error instanceof BatchlabError) return `[${error.code}] ${error.message}`;
  // Stacks help developers, not users: shown only with BATCHLAB_DEBUG=1.
  if (error instanceof Error) return process.env.BATCHLAB_DEBUG ? (error.stack ?? error.message) : error.message;
  return String(error);
}
