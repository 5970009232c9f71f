package ledgerclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// Every ledgerd RPC is retry-safe (see ledger.proto), so the client retries
// a call that failed for a reason that means "try again" until it succeeds
// or its context ends, with exponential backoff and jitter.
//
// The client does this itself rather than through gRPC's retryPolicy
// (service config). grpc-go caps a call at 5 attempts (maxCallAttempts), a
// few seconds at most, while a database failover takes longer; a service
// config sent by the name resolver replaces the one set by the client; a
// request larger than the retry buffer is not retried; and a connection
// handed to NewFromConn may have no policy at all. Here the caller's context
// is the one bound, whatever the connection. (gRPC's transparent retry of
// requests that never reached a server still happens underneath.)
const (
	// retryInitialBackoff is the wait before the first retry.
	retryInitialBackoff = 50 * time.Millisecond
	// retryMaxBackoff caps the wait between two attempts.
	retryMaxBackoff = 5 * time.Second
)

// withRetries calls rpc until it succeeds, fails with an error that is not
// worth retrying, or ctx ends. A failure comes back as an *Error; once ctx
// has ended, as an error that matches both ctx's error and the failure that
// was being retried.
func withRetries[T any](ctx context.Context, rpc func() (T, error)) (T, error) {
	backoff := retryInitialBackoff
	var last error // the last failure, as an *Error
	for {
		response, err := rpc()
		if err == nil {
			return response, nil
		}
		if ctx.Err() != nil {
			// This attempt most likely failed because ctx ended; the failure
			// that made us retry, if any, says more.
			if last == nil {
				last = toError(err)
			}
			return response, fmt.Errorf("%w (last error: %w)", contextError(ctx), last)
		}
		last = toError(err)
		wait := jitter(backoff)
		if delay, limited := retryAfter(last); limited {
			wait = delay + jitter(retryInitialBackoff) // the server says when
		} else if !retryable(last) {
			return response, last
		}
		if sleep(ctx, wait) != nil {
			return response, fmt.Errorf("%w (last error: %w)", contextError(ctx), last)
		}
		backoff = min(2*backoff, retryMaxBackoff)
	}
}

// retryable reports whether a failed call should be made again: when the
// server or its database could not be reached, or when the server ran out
// of time (the caller's context has not, or withRetries would have stopped).
func retryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Code() == codes.Unavailable || e.Code() == codes.DeadlineExceeded)
}

// retryAfter reports whether ledgerd refused the call for now, and the wait
// its google.rpc.RetryInfo gives: a rate limit (reason RATE_LIMITED), or a
// quota that frees up by itself (QUOTA_EXCEEDED with a RetryInfo: held
// leases). Such a call changed nothing, so it is made again after that
// wait.
func retryAfter(err error) (time.Duration, bool) {
	var e *Error
	rateLimited := ledgerv1.ErrorReason_RATE_LIMITED.String()
	if !errors.As(err, &e) || (e.Reason != rateLimited && e.Reason != ledgerv1.ErrorReason_QUOTA_EXCEEDED.String()) {
		return 0, false
	}
	for _, detail := range e.status.Details() {
		if info, ok := detail.(*errdetails.RetryInfo); ok {
			return min(info.GetRetryDelay().AsDuration(), retryMaxBackoff), true
		}
	}
	return retryInitialBackoff, e.Reason == rateLimited
}

// jitter returns a random duration in [d/2, d), so that clients that failed
// together do not retry together.
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sleep waits for d, or until ctx ends, and then returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// contextError returns ctx's error, and its cause when that is a different
// error (see context.WithCancelCause), so that both match with errors.Is.
func contextError(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || errors.Is(cause, err) {
		return err
	}
	return fmt.Errorf("%w: %w", err, cause)
}
