import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./details.js";
import { ErrorReason, ErrorReasonSchema } from "./gen/ledger/v1/error_reason_pb.js";
import type { ItemError } from "./gen/ledger/v1/ledger_pb.js";

/** The google.rpc.ErrorInfo domain of every ledgerd error. */
export const ERROR_DOMAIN = "ledgerd";

/** The names of the ledger.v1.ErrorReason values: the reason strings ledgerd sends. */
export type ErrorReasonName = Exclude<keyof typeof ErrorReason, "ERROR_REASON_UNSPECIFIED">;

/** The name of the ErrorReason value V. */
type NameOf<V extends ErrorReason> = {
  [K in ErrorReasonName]: (typeof ErrorReason)[K] extends V ? K : never;
}[ErrorReasonName];

/**
 * The reason string of an ErrorReason value: the value's name in
 * error_reason.proto, which is what ledgerd puts in the ErrorInfo.
 */
function reasonName<V extends ErrorReason>(value: V): NameOf<V> {
  return ErrorReasonSchema.value[value]!.name as NameOf<V>;
}

/**
 * The google.rpc.ErrorInfo reasons of ledgerd, as defined once by the
 * ledger.v1.ErrorReason enum (error_reason.proto; exported too). Branch on
 * them with the error classes (`err instanceof LeaseLostError`) or on
 * {@link LedgerError.reason}.
 */
export const Reason = {
  /** A request field broke a limit or a format. Nothing changed; do not retry as is. */
  InvalidArgument: reasonName(ErrorReason.INVALID_ARGUMENT),
  /** Same key, different request: the key was first reserved with another fingerprint. */
  FingerprintMismatch: reasonName(ErrorReason.FINGERPRINT_MISMATCH),
  /** The fencing token is not the key's current one: someone took over, or the key finished. */
  LeaseLost: reasonName(ErrorReason.LEASE_LOST),
  /** A retried Complete or Fail carried a different result or error than the one recorded. */
  ResultConflict: reasonName(ErrorReason.RESULT_CONFLICT),
  /** Lookup of a key the ledger does not hold. */
  NotFound: reasonName(ErrorReason.NOT_FOUND),
  /** No or bad credentials. */
  Unauthenticated: reasonName(ErrorReason.UNAUTHENTICATED),
  /** The caller may not do this in the namespace. */
  PermissionDenied: reasonName(ErrorReason.PERMISSION_DENIED),
  /**
   * A limit of gRPC itself was hit (a response over `readMaxBytes`, say). Not
   * an ErrorReason: ledgerd never sends it; it is what a RESOURCE_EXHAUSTED
   * status without a ledgerd ErrorInfo is reported as.
   */
  ResourceExhausted: "RESOURCE_EXHAUSTED",
  /** Over the caller's or the namespace's rate; nothing was done. Retry after the server's RetryInfo. */
  RateLimited: reasonName(ErrorReason.RATE_LIMITED),
  /**
   * Over a namespace quota; nothing was done. A Reserve over max_held_leases may be retried
   * later (places free up as workers finish); a Complete over max_stored_bytes leaves the
   * lease held: complete a smaller result, fail or release.
   */
  QuotaExceeded: reasonName(ErrorReason.QUOTA_EXCEEDED),
  /** The server or its database could not be reached; retried by the client. */
  Unavailable: reasonName(ErrorReason.UNAVAILABLE),
  /** The call ran out of time and its effect is unknown; retried by the client. */
  DeadlineExceeded: reasonName(ErrorReason.DEADLINE_EXCEEDED),
  /** The call was canceled. */
  Canceled: reasonName(ErrorReason.CANCELED),
  /** A bug in ledgerd; the details are in its log. */
  Internal: reasonName(ErrorReason.INTERNAL),
} as const;

/** One of the {@link Reason} values, or another string a newer server sends. */
export type ReasonString = (typeof Reason)[keyof typeof Reason] | ErrorReasonName | (string & {});

/**
 * A failed call to ledgerd: the gRPC status code, the ledgerd reason read
 * from its google.rpc.ErrorInfo, and for INVALID_ARGUMENT the field named by
 * its google.rpc.BadRequest. Every error a client method or `do()` gets from
 * the server is a LedgerError, of the subclass of its reason (for example a
 * {@link LeaseLostError} for LEASE_LOST); its `cause` is the underlying
 * `ConnectError` (with the response metadata and raw details).
 */
export class LedgerError extends Error {
  /**
   * The google.rpc.ErrorInfo reason, e.g. `"LEASE_LOST"`. When the status
   * carries no ErrorInfo of domain "ledgerd" (gRPC or a proxy made it, e.g.
   * for a connection that could not be made), it is derived from the code
   * where ledgerd uses that code for a single reason, and is `""` otherwise.
   */
  readonly reason: ReasonString;
  /** The gRPC status code (Connect's `Code`, numerically the gRPC code). */
  readonly code: Code;
  /**
   * The request field that broke a limit or a format, e.g. `"key"`, when
   * the reason is INVALID_ARGUMENT; `""` otherwise.
   */
  readonly field: string;
  /** The server's message, without the reason in front. */
  readonly rawMessage: string;
  /**
   * The least wait before a retry, in ms, from the status's
   * google.rpc.RetryInfo (a rate limit, say); undefined without one. Every
   * retry of the client waits at least this long.
   */
  readonly retryDelayMs: number | undefined;

  /**
   * Makes an error; normally the client does, from a `ConnectError` (see
   * {@link toLedgerError}).
   */
  constructor(init: {
    reason: string;
    code: Code;
    field?: string;
    rawMessage: string;
    cause?: unknown;
    retryDelayMs?: number;
  }) {
    const label = init.reason || Code[init.code] || `code ${init.code}`;
    super(init.rawMessage ? `${label}: ${init.rawMessage}` : label, { cause: init.cause });
    this.name = new.target.name;
    this.reason = init.reason;
    this.code = init.code;
    this.field = init.field ?? "";
    this.rawMessage = init.rawMessage;
    this.retryDelayMs = init.retryDelayMs;
  }
}

/**
 * INVALID_ARGUMENT: a request field broke a limit or a format;
 * {@link LedgerError.field} names it. Nothing was changed; do not retry as is.
 */
export class InvalidArgumentError extends LedgerError {}

/**
 * FINGERPRINT_MISMATCH: the key was first reserved with a different
 * fingerprint: same key, different request. A caller bug; retrying cannot help.
 */
export class FingerprintMismatchError extends LedgerError {}

/**
 * LEASE_LOST: the fencing token is no longer the key's current one: another
 * worker took over, or the key finished. Abandon the work; its result was not
 * recorded.
 */
export class LeaseLostError extends LedgerError {}

/**
 * RESULT_CONFLICT: a retried Complete or Fail carried a different result or
 * error than the one recorded under the same token.
 */
export class ResultConflictError extends LedgerError {}

/** NOT_FOUND: the ledger holds no entry for the key (from Lookup). */
export class NotFoundError extends LedgerError {}

/** UNAUTHENTICATED: the call carried no or bad credentials. */
export class UnauthenticatedError extends LedgerError {}

/** PERMISSION_DENIED: the caller may not do this in the namespace. */
export class PermissionDeniedError extends LedgerError {}

/** RESOURCE_EXHAUSTED, RATE_LIMITED or QUOTA_EXCEEDED: a rate limit or quota was hit ({@link LedgerError.reason} says which). */
export class ResourceExhaustedError extends LedgerError {}

/**
 * UNAVAILABLE: the server or its database could not be reached. The client
 * retries it until the caller's signal or timeout ends the call, so a caller
 * sees it only through `onRetry` (see {@link ClientOptions}).
 */
export class UnavailableError extends LedgerError {}

/**
 * The circuit breaker of the client is open (kind `circuit_open`): enough
 * recent attempts found ledgerd unavailable that calls which start work or
 * read now fail at once, without touching the network, until the breaker
 * lets a probe through (see {@link BreakerOptions}). It is an
 * {@link UnavailableError}, so code that branches on unavailability covers
 * it; `do()` does not run the work (unless its fallback is `"fail_open"`).
 */
export class CircuitOpenError extends UnavailableError {
  /** When the breaker opened. */
  readonly since: Date;
  /** The last unavailability error the breaker counted, if any. */
  readonly lastError: unknown;

  /** Makes the error; the breaker does, when it refuses a call. */
  constructor(init: { since: Date; ageMs: number; lastError: unknown }) {
    const last = init.lastError instanceof Error ? init.lastError.message : init.lastError === undefined ? "none" : String(init.lastError);
    const rawMessage = `circuit open since ${init.since.toISOString().replace(/\.\d{3}Z$/, "Z")} (${(init.ageMs / 1000).toFixed(1)}s ago), last error: ${last}`;
    super({ reason: Reason.Unavailable, code: Code.Unavailable, rawMessage });
    this.message = `ledgerd: ${rawMessage}`;
    this.since = init.since;
    this.lastError = init.lastError;
  }
}

/**
 * DEADLINE_EXCEEDED: a call ran out of time and its effect is unknown. Every
 * ledgerd RPC is retry-safe, so the client retries it while the caller's own
 * signal and timeout allow.
 */
export class DeadlineExceededError extends LedgerError {}

/** CANCELED: the call was canceled (not by the caller's own signal). */
export class CanceledError extends LedgerError {}

/** INTERNAL: a bug in ledgerd; the details are in the server's log. */
export class InternalError extends LedgerError {}

type LedgerErrorClass = new (init: ConstructorParameters<typeof LedgerError>[0]) => LedgerError;

const reasonClasses: Record<string, LedgerErrorClass> = {
  [Reason.InvalidArgument]: InvalidArgumentError,
  [Reason.FingerprintMismatch]: FingerprintMismatchError,
  [Reason.LeaseLost]: LeaseLostError,
  [Reason.ResultConflict]: ResultConflictError,
  [Reason.NotFound]: NotFoundError,
  [Reason.Unauthenticated]: UnauthenticatedError,
  [Reason.PermissionDenied]: PermissionDeniedError,
  [Reason.ResourceExhausted]: ResourceExhaustedError,
  [Reason.RateLimited]: ResourceExhaustedError,
  [Reason.QuotaExceeded]: ResourceExhaustedError,
  [Reason.Unavailable]: UnavailableError,
  [Reason.DeadlineExceeded]: DeadlineExceededError,
  [Reason.Canceled]: CanceledError,
  [Reason.Internal]: InternalError,
};

// The reason of a status that carries no ledgerd ErrorInfo. Only codes that
// ledgerd uses for a single reason are listed: FAILED_PRECONDITION could be
// FINGERPRINT_MISMATCH or RESULT_CONFLICT, and gets no reason.
const codeReasons: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: Reason.InvalidArgument,
  [Code.Aborted]: Reason.LeaseLost,
  [Code.NotFound]: Reason.NotFound,
  [Code.Unauthenticated]: Reason.Unauthenticated,
  [Code.PermissionDenied]: Reason.PermissionDenied,
  [Code.ResourceExhausted]: Reason.ResourceExhausted,
  [Code.Unavailable]: Reason.Unavailable,
  [Code.DeadlineExceeded]: Reason.DeadlineExceeded,
  [Code.Canceled]: Reason.Canceled,
  [Code.Internal]: Reason.Internal,
};

// The Node.js error codes of a connection that failed or broke before the
// server answered. Connect reports some of them as ABORTED or INTERNAL (a
// reset connection as ABORTED, say), which would read as LEASE_LOST or as a
// bug in ledgerd; the server did not answer, so they are UNAVAILABLE, as
// the Go and Python clients report them, and retried.
const transportFailures = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_INVALID_STREAM",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_STREAM_CANCEL",
]);

// RST_STREAM REFUSED_STREAM: the server (one going away, say) did not
// process the stream, so the call can be retried as is. gRPC maps it to
// UNAVAILABLE; Node reports it as ERR_HTTP2_STREAM_ERROR, which Connect
// makes INTERNAL.
const refusedStream = "NGHTTP2_REFUSED_STREAM";

/** Reports whether a ConnectError was made from a Node.js error of the connection (see transportFailures). */
function isTransportFailure(err: ConnectError): boolean {
  if (err.rawMessage.includes(refusedStream)) {
    return true;
  }
  const seen = new Set<unknown>();
  for (let e: unknown = err.cause; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && (transportFailures.has(code) || e.message.includes(refusedStream))) {
      return true;
    }
  }
  return false;
}

/**
 * Turns the error of a call into a {@link LedgerError} of the subclass of
 * its reason, reading the google.rpc.ErrorInfo (domain "ledgerd") and
 * google.rpc.BadRequest details of a `ConnectError`. A call that failed
 * because the connection failed or broke before an answer (a Node.js error
 * such as ECONNRESET, which Connect may report as ABORTED or INTERNAL) is an
 * {@link UnavailableError}, as in the Go client. A LedgerError is returned
 * as is; any other value (not a `ConnectError`) is returned unchanged.
 */
export function toLedgerError(err: unknown): unknown {
  if (err instanceof LedgerError || !(err instanceof ConnectError)) {
    return err;
  }
  let code = err.code;
  let reason = "";
  let field = "";
  let fromLedger = false;
  for (const info of err.findDetails(ErrorInfoSchema)) {
    if (info.domain === ERROR_DOMAIN) {
      reason = info.reason;
      field ||= info.metadata["field"] ?? "";
      fromLedger = true;
    }
  }
  if (!fromLedger) {
    if (isTransportFailure(err)) {
      code = Code.Unavailable;
    }
    reason = codeReasons[code] ?? "";
  }
  for (const badRequest of err.findDetails(BadRequestSchema)) {
    const violation = badRequest.fieldViolations[0];
    if (violation) {
      field = violation.field;
      break;
    }
  }
  let retryDelayMs: number | undefined;
  for (const info of err.findDetails(RetryInfoSchema)) {
    const d = info.retryDelay;
    if (d) {
      retryDelayMs = Number(d.seconds) * 1000 + d.nanos / 1e6;
    }
  }
  const ErrorClass = reasonClasses[reason] ?? LedgerError;
  return new ErrorClass({ reason, code, field, rawMessage: err.rawMessage, cause: err, retryDelayMs });
}

/**
 * Turns the error of one item of a batch call (ReserveBatch, CompleteBatch,
 * LookupBatch) into the {@link LedgerError} the single call would have
 * rejected with: the subclass of its reason, its field and message.
 */
export function itemError(e: ItemError): LedgerError {
  const ErrorClass = reasonClasses[e.reason] ?? LedgerError;
  return new ErrorClass({ reason: e.reason, code: e.code as Code, field: e.field, rawMessage: e.message });
}

/**
 * The error of a {@link LedgerClient.doBatch} key that another worker
 * holds: doBatch does not wait for it; call doBatch (or do) again for such
 * keys later.
 */
export class InProgressError extends Error {
  /** The key another worker holds. */
  readonly key: string;
  /** The owner that holds it. */
  readonly owner: string;

  /** Makes the error; doBatch does, from an IN_PROGRESS outcome. */
  constructor(key: string, owner: string) {
    super(`in progress: another worker holds the key ${key} (${owner})`);
    this.name = "InProgressError";
    this.key = key;
    this.owner = owner;
  }
}

/**
 * The error `do()` rejects with when the key failed permanently: an earlier
 * run's work threw a {@link PermanentError}, and the ledger stored the
 * failure. The work is not run again; a new attempt needs a new key (or an
 * admin reset of this one).
 */
export class FailedError extends Error {
  /** The namespace of the failed key. */
  readonly namespace: string;
  /** The failed key. */
  readonly key: string;
  /** The stored error's machine-readable code; it may be empty. */
  readonly code: string;
  /** The stored error's message, exactly as recorded. */
  readonly errorMessage: string;
  /** The token of the grant whose work failed. */
  readonly fencingToken: bigint;
  /** How many grants the key had. */
  readonly attempts: number;
  /** When the key failed, by the database's clock. */
  readonly failedAt: Date;

  /** Makes the error; `do()` does, from a FAILED outcome of Reserve. */
  constructor(init: {
    namespace: string;
    key: string;
    code: string;
    errorMessage: string;
    fencingToken: bigint;
    attempts: number;
    failedAt: Date;
  }) {
    const stored = init.code ? `${init.code}: ${init.errorMessage}` : init.errorMessage;
    super(`the key failed permanently at attempt ${init.attempts} (token ${init.fencingToken}): ${stored}`);
    this.name = "FailedError";
    this.namespace = init.namespace;
    this.key = init.key;
    this.code = init.code;
    this.errorMessage = init.errorMessage;
    this.fencingToken = init.fencingToken;
    this.attempts = init.attempts;
    this.failedAt = init.failedAt;
  }
}

/**
 * Marks a work error as permanent; make one with {@link permanent}. When the
 * work passed to `do()` throws a PermanentError (or an error whose `cause`
 * chain holds one), `do()` records a permanent failure: the key is FAILED
 * and every later `do()` of it rejects with a {@link FailedError} without
 * running the work. The original error is the `cause`.
 */
export class PermanentError extends Error {
  /** Wraps err, the work's error; its message becomes this error's message. */
  constructor(err: unknown) {
    super(err instanceof Error ? err.message : String(err), { cause: err });
    this.name = "PermanentError";
  }
}

/**
 * Marks err as a permanent failure of the work (see {@link PermanentError}):
 * retrying the key cannot succeed, e.g. because the input is malformed. Work
 * errors that are not marked are retryable: the key is released for the next
 * attempt. A PermanentError is returned as is.
 *
 * @example
 * if (!valid(record)) throw permanent(new Error("malformed record"));
 */
export function permanent(err: unknown): PermanentError {
  return err instanceof PermanentError ? err : new PermanentError(err);
}

/**
 * Reports whether err is, or wraps through its `cause` chain, a
 * {@link PermanentError}.
 */
export function isPermanent(err: unknown): boolean {
  const seen = new Set<unknown>();
  for (let e = err; e instanceof Error && !seen.has(e); e = e.cause) {
    if (e instanceof PermanentError) {
      return true;
    }
    seen.add(e);
  }
  return false;
}
