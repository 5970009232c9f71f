/**
 * The TypeScript client of ledgerd, the central idempotency ledger.
 *
 * `createClient({ address, insecure })` returns a {@link LedgerClient}; its
 * `do(namespace, key, work)` claims the key, heartbeats, completes or fails
 * it, and replays a stored result; `doBatch` does the same for many keys
 * with one work call. A circuit breaker, a retry budget and an explicit
 * fallback policy (fail closed by default, or fail open) decide what
 * happens while ledgerd is down; several replicas are balanced round robin. Errors are {@link LedgerError} subclasses,
 * one per ledgerd reason. The generated API (messages, enums, schemas and
 * the LedgerService descriptor) is re-exported as well.
 *
 * @packageDocumentation
 */

export {
  createClient,
  clientDefaults,
  LedgerClient,
  USER_AGENT,
  type CallOptions,
  type ClientOptions,
  type CompleteBatchRequestInit,
  type LookupBatchRequestInit,
  type ReserveBatchRequestInit,
  type CompleteRequestInit,
  type FailRequestInit,
  type HeartbeatRequestInit,
  type LookupRequestInit,
  type ReleaseRequestInit,
  type ReserveRequestInit,
} from "./client.js";
export { type DoOptions, type DoResult, type Lease } from "./do.js";
export { MAX_BATCH_ITEMS, type BatchResult, type BatchWork, type DoBatchOptions } from "./batch.js";
export {
  breakerDefaults,
  retryBudgetDefaults,
  type BreakerListener,
  type BreakerOptions,
  type BreakerState,
  type RetryBudgetOptions,
} from "./breaker.js";
export {
  defaultFailOpenQueue,
  type FailOpenListener,
  type FailOpenOutcome,
  type FailOpenRecordedListener,
  type Fallback,
  type Stats,
} from "./policy.js";
export { VERSION } from "./version.js";
export {
  CanceledError,
  CircuitOpenError,
  DeadlineExceededError,
  ERROR_DOMAIN,
  FailedError,
  FingerprintMismatchError,
  InProgressError,
  InternalError,
  InvalidArgumentError,
  itemError,
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
  RetryInfoSchema,
  type RetryInfo,
  type BadRequest,
  type BadRequest_FieldViolation,
  type ErrorInfo,
} from "./details.js";
export { defaultRetryPolicy, isRetryable, retryDelay, type RetryListener, type RetryPolicy } from "./retry.js";
export * from "./gen/ledger/v1/ledger_pb.js";
export * from "./gen/ledger/v1/error_reason_pb.js";
