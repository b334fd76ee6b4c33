// Coded errors, classified by the recovery they need (Horovod's elastic.py idea), and their one
// translation to exit codes and WebSocket close codes.

/** What a caller must do when an error of this class happens. */
export type Recovery = 'retry-step' | 'close-connection' | 'stop-run' | 'fix-input';

/** Stable error codes; they travel in `error` frames, close reasons and logs. */
export type ErrorCode =
  | 'BAD_OPTION'
  | 'BAD_FRAME'
  | 'BAD_MESSAGE'
  | 'VERSION_MISMATCH'
  | 'AUTH_FAILED'
  | 'DATASET_MISMATCH'
  | 'SHAPE_MISMATCH'
  | 'NON_FINITE'
  | 'WORKER_LOST'
  | 'TIMEOUT'
  | 'NO_WORKERS'
  | 'CONNECT_FAILED';

const RECOVERY: Record<ErrorCode, Recovery> = {
  BAD_OPTION: 'fix-input',
  BAD_FRAME: 'close-connection',
  BAD_MESSAGE: 'close-connection',
  VERSION_MISMATCH: 'close-connection',
  AUTH_FAILED: 'close-connection',
  DATASET_MISMATCH: 'close-connection',
  SHAPE_MISMATCH: 'stop-run',
  NON_FINITE: 'stop-run',
  WORKER_LOST: 'retry-step',
  TIMEOUT: 'retry-step',
  NO_WORKERS: 'stop-run',
  CONNECT_FAILED: 'stop-run',
};

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

/** A command-line or environment option with a value that is not accepted. */
export class OptionError extends BatchlabError {
  constructor(option: string, value: unknown, accepted: string) {
    super('BAD_OPTION', `--${option}: got ${JSON.stringify(value)}; expected ${accepted}`);
    this.name = 'OptionError';
  }
}

/** A frame or message that fails validation; the connection that sent it is closed. */
export class ProtocolError extends BatchlabError {
  constructor(code: 'BAD_FRAME' | 'BAD_MESSAGE' | 'VERSION_MISMATCH' | 'DATASET_MISMATCH', message: string) {
    super(code, message);
    this.name = 'ProtocolError';
  }
}

/** Exit code for a process that stops because of `error` (0 is success, 1 is an unexpected crash). */
export function exitCodeFor(error: unknown): number {
  if (!(error instanceof BatchlabError)) return 1;
  switch (error.recovery) {
    case 'fix-input':
      return 2;
    case 'close-connection':
      return 3;
    case 'retry-step':
      return 4;
    case 'stop-run':
      return 5;
  }
}

/** WebSocket close code (4000–4999 is the application range) for an error that ends a connection. */
export function closeCodeFor(code: ErrorCode): number {
  const codes: Partial<Record<ErrorCode, number>> = {
    BAD_FRAME: 4400,
    BAD_MESSAGE: 4400,
    VERSION_MISMATCH: 4426,
    AUTH_FAILED: 4401,
    DATASET_MISMATCH: 4409,
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
