package ledgerclient

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// errorDomain is the google.rpc.ErrorInfo domain of every ledgerd error.
const errorDomain = "ledgerd"

// The errors of ledgerd, one per google.rpc.ErrorInfo reason (see
// ledger.proto). Every error that a Client method or Do gets from the server
// is an *Error that matches exactly one of them with errors.Is:
//
//	if errors.Is(err, ledgerclient.ErrLeaseLost) { ... }
var (
	// ErrInvalidArgument means a request field broke a limit or a format
	// (reason INVALID_ARGUMENT). Nothing was changed; do not retry as is.
	// The *Error's Field names the field.
	ErrInvalidArgument = errors.New("ledgerd: invalid argument")

	// ErrFingerprintMismatch means the key was first reserved with a
	// different fingerprint: same key, different request (reason
	// FINGERPRINT_MISMATCH). It is a caller bug; retrying cannot help.
	ErrFingerprintMismatch = errors.New("ledgerd: fingerprint mismatch")

	// ErrLeaseLost means the fencing token is no longer the key's current one
	// (reason LEASE_LOST): another worker took over, or the key finished.
	// Abandon the work; its result was not recorded.
	ErrLeaseLost = errors.New("ledgerd: lease lost")

	// ErrResultConflict means a retried Complete or Fail carried a different
	// result or error than the one recorded under the same token (reason
	// RESULT_CONFLICT).
	ErrResultConflict = errors.New("ledgerd: result conflict")

	// ErrNotFound means the ledger holds no entry for the key (reason
	// NOT_FOUND, from Lookup), or, from Reserve, ReserveBatch and Do, that
	// the namespace does not exist on a ledgerd that does not create
	// namespaces on first use: an admin creates it (ledgerctl namespaces
	// create). It is not retried.
	ErrNotFound = errors.New("ledgerd: not found")

	// ErrUnauthenticated means the call carried no or bad credentials
	// (reason UNAUTHENTICATED).
	ErrUnauthenticated = errors.New("ledgerd: unauthenticated")

	// ErrPermissionDenied means the caller may not do this in the namespace
	// (reason PERMISSION_DENIED).
	ErrPermissionDenied = errors.New("ledgerd: permission denied")

	// ErrResourceExhausted means a rate limit was hit (reason RATE_LIMITED,
	// or RESOURCE_EXHAUSTED from gRPC itself). The client waits for the
	// server's RetryInfo and retries a rate-limited call, so a caller sees it
	// only together with the context's error.
	ErrResourceExhausted = errors.New("ledgerd: resource exhausted")

	// ErrQuotaExceeded means the call would take its namespace over a quota
	// (reason QUOTA_EXCEEDED; the Error's Metadata names the quota, its limit
	// and the usage). Nothing was done. A Reserve over max_held_leases is
	// retried after the server's RetryInfo until the context ends (places
	// free up as other workers finish); a Complete over max_stored_bytes is
	// not retried, and the lease stays held: Complete a smaller result, Fail
	// or Release.
	ErrQuotaExceeded = errors.New("ledgerd: quota exceeded")

	// ErrUnavailable means the server or its database could not be reached
	// (reason UNAVAILABLE). The client retries it until the context ends, so
	// a caller sees it only together with the context's error.
	ErrUnavailable = errors.New("ledgerd: unavailable")

	// ErrDeadlineExceeded means the call ran out of time and its effect is
	// unknown (reason DEADLINE_EXCEEDED). Every RPC is retry-safe: the client
	// retries it while ctx has time left, so a caller sees it only when ctx
	// itself ran out, together with context.DeadlineExceeded.
	ErrDeadlineExceeded = errors.New("ledgerd: deadline exceeded")

	// ErrCanceled means the call was canceled (reason CANCELED).
	ErrCanceled = errors.New("ledgerd: canceled")

	// ErrInternal means a bug in ledgerd (reason INTERNAL); the details are
	// in the server's log.
	ErrInternal = errors.New("ledgerd: internal error")

	// ErrFailed is matched by the *FailedError that Do returns when the key
	// failed permanently (an earlier run's work returned a Permanent error).
	// The work is not run again.
	ErrFailed = errors.New("ledgerd: key failed permanently")

	// ErrNoLease is returned by SetCheckpoint when its context does not come
	// from Do's work function.
	ErrNoLease = errors.New("ledgerclient: the context carries no lease (use the context Do passes to the work)")
)

// reasonErrors maps each ErrorInfo reason to its sentinel. The reasons are
// the names of ledger.v1.ErrorReason (error_reason.proto), the one place
// they are defined.
var reasonErrors = map[string]error{
	ledgerv1.ErrorReason_INVALID_ARGUMENT.String():     ErrInvalidArgument,
	ledgerv1.ErrorReason_FINGERPRINT_MISMATCH.String(): ErrFingerprintMismatch,
	ledgerv1.ErrorReason_LEASE_LOST.String():           ErrLeaseLost,
	ledgerv1.ErrorReason_RESULT_CONFLICT.String():      ErrResultConflict,
	ledgerv1.ErrorReason_NOT_FOUND.String():            ErrNotFound,
	ledgerv1.ErrorReason_NOT_LEASED.String():           ErrNotLeased,
	ledgerv1.ErrorReason_ALREADY_EXISTS.String():       ErrAlreadyExists,
	ledgerv1.ErrorReason_UNAUTHENTICATED.String():      ErrUnauthenticated,
	ledgerv1.ErrorReason_PERMISSION_DENIED.String():    ErrPermissionDenied,
	reasonResourceExhausted:                            ErrResourceExhausted,
	ledgerv1.ErrorReason_RATE_LIMITED.String():         ErrResourceExhausted,
	ledgerv1.ErrorReason_QUOTA_EXCEEDED.String():       ErrQuotaExceeded,
	ledgerv1.ErrorReason_UNAVAILABLE.String():          ErrUnavailable,
	ledgerv1.ErrorReason_DEADLINE_EXCEEDED.String():    ErrDeadlineExceeded,
	ledgerv1.ErrorReason_CANCELED.String():             ErrCanceled,
	ledgerv1.ErrorReason_INTERNAL.String():             ErrInternal,
}

// reasonResourceExhausted is the reason of a RESOURCE_EXHAUSTED status that
// carries no ledgerd ErrorInfo: gRPC's own (a response over the receive
// limit, say). ledgerd never sends it, so it is not an ErrorReason.
const reasonResourceExhausted = "RESOURCE_EXHAUSTED"

// codeReasons gives the reason of a status that carries no ledgerd
// ErrorInfo: one made by gRPC itself (no connection, a client-side
// deadline) or by a proxy. Only codes that ledgerd uses for a single reason
// are listed; FAILED_PRECONDITION, for one, could be either
// FINGERPRINT_MISMATCH or RESULT_CONFLICT and gets no reason.
var codeReasons = map[codes.Code]string{
	codes.InvalidArgument:   ledgerv1.ErrorReason_INVALID_ARGUMENT.String(),
	codes.Aborted:           ledgerv1.ErrorReason_LEASE_LOST.String(),
	codes.NotFound:          ledgerv1.ErrorReason_NOT_FOUND.String(),
	codes.AlreadyExists:     ledgerv1.ErrorReason_ALREADY_EXISTS.String(),
	codes.Unauthenticated:   ledgerv1.ErrorReason_UNAUTHENTICATED.String(),
	codes.PermissionDenied:  ledgerv1.ErrorReason_PERMISSION_DENIED.String(),
	codes.ResourceExhausted: reasonResourceExhausted,
	codes.Unavailable:       ledgerv1.ErrorReason_UNAVAILABLE.String(),
	codes.DeadlineExceeded:  ledgerv1.ErrorReason_DEADLINE_EXCEEDED.String(),
	codes.Canceled:          ledgerv1.ErrorReason_CANCELED.String(),
	codes.Internal:          ledgerv1.ErrorReason_INTERNAL.String(),
}

// Error is a failed call to ledgerd: the gRPC status it returned, with the
// ledgerd reason read from its details. It matches the sentinel of its
// reason with errors.Is (ErrLeaseLost for LEASE_LOST, and so on), and
// status.FromError and status.Code see its gRPC status.
type Error struct {
	// Reason is the google.rpc.ErrorInfo reason, e.g. "LEASE_LOST". When the
	// status carries no ErrorInfo of domain "ledgerd" (gRPC made it, e.g. for
	// a connection that could not be made), Reason is derived from the status
	// code where ledgerd uses that code for a single reason, and is empty
	// otherwise.
	Reason string
	// Field names the request field that broke a limit or a format, e.g.
	// "key", when Reason is INVALID_ARGUMENT (from the google.rpc.BadRequest
	// details). It is empty otherwise.
	Field string
	// Metadata is the google.rpc.ErrorInfo metadata, e.g. the namespace,
	// quota, limit and usage of a QUOTA_EXCEEDED. Nil when there is none.
	Metadata map[string]string
	// RequestID is the id under which ledgerd logged the call (the
	// request_id field of its request log line): the one given with
	// WithRequestID, or the one ledgerd made. Empty when the error did not
	// come from ledgerd (a connection that could not be made).
	RequestID string

	status *status.Status
}

// Error returns the reason (or the gRPC code when there is none) and the
// server's message.
func (e *Error) Error() string {
	label := e.Reason
	if label == "" {
		label = e.status.Code().String()
	}
	return fmt.Sprintf("%s: %s", label, e.status.Message())
}

// Is reports whether target is the sentinel of e's reason.
func (e *Error) Is(target error) bool {
	sentinel, ok := reasonErrors[e.Reason]
	return ok && target == sentinel
}

// Code returns the gRPC status code.
func (e *Error) Code() codes.Code { return e.status.Code() }

// GRPCStatus returns the gRPC status, with all its details. It lets
// status.FromError and status.Code work on errors that wrap an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Reason returns the ledgerd reason of err (for example "LEASE_LOST"), or ""
// if err is nil or did not come from a call to ledgerd. It is meant for
// logs and metric labels; branch with errors.Is and the sentinels instead.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// toError turns the error of a gRPC call into an *Error. An error that is
// not a gRPC status (which the generated client never returns) is kept.
func toError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{status: st, Reason: codeReasons[st.Code()]}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() == errorDomain {
				e.Reason = d.GetReason()
				e.Metadata = d.GetMetadata()
				e.RequestID = d.GetMetadata()[requestIDField]
				if e.Field == "" {
					e.Field = d.GetMetadata()["field"]
				}
			}
		case *errdetails.BadRequest:
			if violations := d.GetFieldViolations(); len(violations) > 0 {
				e.Field = violations[0].GetField()
			}
		}
	}
	return e
}

// FailedError is returned by Do when the key failed permanently: an earlier
// run's work returned a Permanent error, which the ledger stored. It matches
// ErrFailed with errors.Is. The work is not run again; a new attempt needs a
// new key (or an admin reset of this one).
type FailedError struct {
	// Namespace and Key name the failed key.
	Namespace string
	Key       string
	// Code is the stored error's machine-readable code; it may be empty.
	Code string
	// Message is the stored error's message.
	Message string
	// FencingToken is the token of the grant whose work failed.
	FencingToken int64
	// Attempts is how many grants the key had.
	Attempts int
	// FailedAt is when the key failed, by the database's clock.
	FailedAt time.Time
}

// Error describes the stored failure.
func (e *FailedError) Error() string {
	message := e.Message
	if e.Code != "" {
		message = e.Code + ": " + message
	}
	return fmt.Sprintf("the key failed permanently at attempt %d (token %d): %s", e.Attempts, e.FencingToken, message)
}

// Is makes errors.Is(err, ErrFailed) true.
func (e *FailedError) Is(target error) bool { return target == ErrFailed }

// PermanentError marks a work error as permanent; make one with Permanent.
// When the work passed to Do returns an error that is (or wraps) a
// *PermanentError, Do records a permanent failure: the key is FAILED and
// every later Do of it returns a *FailedError without running work.
type PermanentError struct {
	// Err is the work's error.
	Err error
}

// Error returns the message of the wrapped error.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error, so that errors.Is and errors.As see it.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as a permanent failure of the work (see
// PermanentError): retrying the key cannot succeed, e.g. because the input
// is malformed. Work errors that are not marked are retryable: the key is
// released for the next attempt. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}
