/**
 * The TypeScript client of ledgerd, the central idempotency ledger.
 *
 * `createClient({ address, insecure })` returns a {@link LedgerClient}; its
 * `do(namespace, key, work)` claims the key, heartbeats, completes or fails
 * it, and replays a stored result. Errors are {@link LedgerError} subclasses,
 * one per ledgerd reason. The generated API (messages, enums, schemas and
 * the LedgerService descriptor) is re-exported as well.
 *
 * @packageDocumentation
 */

export {
  createClient,
  clientDefaults,
  LedgerClient,
  type CallOptions,
  type ClientOptions,
  type CompleteRequestInit,
  type FailRequestInit,
  type HeartbeatRequestInit,
  type LookupRequestInit,
  type ReleaseRequestInit,
  type ReserveRequestInit,
} from "./client.js";
export { type DoOptions, type DoResult, type Lease } from "./do.js";
export {
  CanceledError,
  DeadlineExceededError,
  ERROR_DOMAIN,
  FailedError,
  FingerprintMismatchError,
  InternalError,
  InvalidArgumentError,
  isPermanent,
  LeaseLostError,
  LedgerError,
  NotFoundError,
  permanent,
  PermanentError,
  PermissionDeniedError,
  Reason,
  ResourceExhaustedError,
  ResultConflictError,
  toLedgerError,
  UnauthenticatedError,
  UnavailableError,
  type ErrorReasonName,
  type ReasonString,
} from "./errors.js";
export {
  BadRequestSchema,
  ErrorInfoSchema,
  type BadRequest,
  type BadRequest_FieldViolation,
  type ErrorInfo,
} from "./details.js";
export { defaultRetryPolicy, isRetryable, type RetryListener, type RetryPolicy } from "./retry.js";
export * from "./gen/ledger/v1/ledger_pb.js";
export * from "./gen/ledger/v1/error_reason_pb.js";
