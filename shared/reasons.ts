// Why a frame, reply or connection is refused, and why work is re-issued: one list each. The
// protocol docs, the coordinator's checks, its log lines and the metrics' label values all use
// these names (`batchlab_rejected_messages_total{reason}`, `batchlab_microbatch_reassignments_total{reason}`).

import type { ErrorCode } from './errors.js';

/** Reasons a connection, frame or gradient reply is refused. */
export const REJECT_REASONS = [
  /** No token or a wrong one in the HTTP upgrade (refused with 401). */
  'auth',
  /** A connection over the caps on connections that have not said hello yet (closed at connect). */
  'pending_limit',
  /** A connection that did not say hello within the pre-hello deadline (closed). */
  'handshake_timeout',
  /** A frame or message that fails validation (the connection is closed). */
  'bad_frame',
  'version_mismatch',
  'dataset_mismatch',
  /** A reply for another step than the one being gathered (a late one). */
  'stale_step',
  /** A reply for a micro-batch the sender does not hold, or with the wrong sample count. */
  'unassigned',
  /** A second reply for a micro-batch already in. */
  'duplicate',
  /** A gradient whose length is not the model's parameter count. */
  'bad_shape',
  /** NaN or Inf in a gradient, loss or norm. */
  'non_finite',
] as const;

export type RejectReason = (typeof REJECT_REASONS)[number];

/** The refusals a step's gather makes of a gradient reply. */
export type ReplyRejectReason = Extract<
  RejectReason,
  'stale_step' | 'unassigned' | 'duplicate' | 'bad_shape' | 'non_finite'
>;

/** Reasons micro-batches are handed to another worker within the same step. */
export const REASSIGN_REASONS = ['worker_lost', 'timeout', 'non_finite'] as const;

export type ReassignReason = (typeof REASSIGN_REASONS)[number];

/** The re-issue reason for a retry-step error code. */
export const REASSIGN_REASON_FOR: Partial<Record<ErrorCode, ReassignReason>> = {
  WORKER_LOST: 'worker_lost',
  TIMEOUT: 'timeout',
  NON_FINITE_REPLY: 'non_finite',
};

/** The reject reason counted for an error that closes a connection (others count as `bad_frame`). */
const REJECT_REASON_FOR: Partial<Record<ErrorCode, RejectReason>> = {
  AUTH_FAILED: 'auth',
  VERSION_MISMATCH: 'version_mismatch',
  DATASET_MISMATCH: 'dataset_mismatch',
};

/** The reject reason counted for an error that closes a connection. */
export function rejectReasonForError(code: ErrorCode): RejectReason {
  return REJECT_REASON_FOR[code] ?? 'bad_frame';
}
