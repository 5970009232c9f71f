package ledger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// The errors of the ledger. Callers branch on them with errors.Is; the gRPC
// server maps each to one status code and ErrorInfo reason.
var (
	// ErrInvalidArgument is matched by every *ValidationError: a request broke
	// a limit or a format and nothing was changed.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrFingerprintMismatch means the key was first reserved with a different
	// fingerprint: same key, different request. It is a caller bug that must
	// not be hidden behind a replay or IN_PROGRESS.
	ErrFingerprintMismatch = errors.New("fingerprint mismatch: the key was reserved with a different fingerprint")

	// ErrLeaseLost means the fencing token is not the key's current one
	// (someone took over, or the key finished, or it was never granted). The
	// caller must abandon its work.
	ErrLeaseLost = errors.New("lease lost: the fencing token is not the key's current one")

	// ErrResultConflict means a retried Complete or Fail carries a different
	// result or error than the one already recorded with the same token.
	ErrResultConflict = errors.New("result conflict: the key was already finished with a different result or error")

	// ErrNotFound means the ledger holds no entry for the key.
	ErrNotFound = errors.New("not found")

	// ErrUnavailable means the database could not be reached or refused to
	// serve (shutting down, too many connections). Every call is retry-safe,
	// so the caller may retry it.
	ErrUnavailable = errors.New("database unavailable")

	// ErrSchemaTooNew means the database was migrated by a newer ledgerd than
	// this one; running on it could corrupt the ledger.
	ErrSchemaTooNew = errors.New("database schema is newer than this ledgerd knows")

	// ErrSchemaBehind means migrations are pending: run `ledgerd migrate`.
	ErrSchemaBehind = errors.New("database schema has pending migrations")
)

// ValidationError reports a request field that broke a limit or a format.
// It matches ErrInvalidArgument.
type ValidationError struct {
	// Field is the request field, e.g. "key" or "metadata".
	Field string
	// Reason says which limit or format was broken, e.g. "must be at most
	// 512 bytes, got 600".
	Reason string
}

// Error returns "invalid <field>: <reason>".
func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidArgument }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// dbError is the one place where driver errors become ledger errors:
// pgx.ErrNoRows becomes ErrNotFound, a write refused by the stored-bytes
// quota in its statement becomes a *QuotaError (see quotaRefusal), and
// every sign that the database cannot be reached or is going away becomes
// ErrUnavailable. Other errors pass through unchanged (the server reports
// them as INTERNAL).
func dbError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if quotaErr := quotaRefusal(err); quotaErr != nil {
		return quotaErr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if isUnavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func isUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgerrcode.IsConnectionException(pgErr.Code),
			pgErr.Code == pgerrcode.AdminShutdown,
			pgErr.Code == pgerrcode.CrashShutdown,
			pgErr.Code == pgerrcode.CannotConnectNow,
			pgErr.Code == pgerrcode.TooManyConnections,
			pgErr.Code == pgerrcode.QueryCanceled,          // statement_timeout: the database is too slow to answer
			pgErr.Code == pgerrcode.ReadOnlySQLTransaction: // a standby during failover
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) ||
		errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, puddle.ErrClosedPool) ||
		pgconn.SafeToRetry(err)
}
