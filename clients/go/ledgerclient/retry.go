package ledgerclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// callPolicy is what every call of a Client goes through: its circuit
// breaker, its retry budget, its attempt limit, and the counters of Stats.
// A nil *callPolicy retries until ctx ends, with no breaker and no budget
// (an AdminClient made by NewAdminFromConn).
type callPolicy struct {
	breaker     *breaker     // nil: no breaker
	budget      *retryBucket // nil: no budget
	maxAttempts int          // 0: until ctx ends

	calls, retries, retriesRefused atomic.Int64
}

// unguardedOps are the calls the breaker lets through even when open: they
// protect work already granted (a lease to keep, a result to record, a key
// to free), and failing them fast would throw away what the worker holds.
// Their outcomes still count.
var unguardedOps = map[string]bool{
	"heartbeat": true, "complete": true, "complete batch": true, "fail": true, "release": true,
}

// unbudgetedOps are the calls whose retries the retry budget does not
// limit: heartbeats keep a granted lease alive.
var unbudgetedOps = map[string]bool{"heartbeat": true}

// withRetries calls rpc until it succeeds, fails with an error that is not
// worth retrying, the policy refuses an attempt (an open breaker, an empty
// retry budget, the attempt limit), or ctx ends. A failure comes back as an
// *Error (or a *CircuitOpenError); once ctx has ended, as an error that
// matches both ctx's error and the failure that was being retried.
func withRetries[T any](ctx context.Context, p *callPolicy, op string, rpc func() (T, error)) (T, error) {
	backoff := retryInitialBackoff
	var last error // the last failure, as an *Error
	var zero T
	for attempt := 1; ; attempt++ {
		probe, err := p.admit(op, attempt, last)
		if err != nil {
			return zero, err
		}
		started := time.Now()
		response, err := rpc()
		p.record(ctx, err, probe, started)
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

// admit decides whether attempt number attempt of op may be made: the
// first is counted as a call and credits the retry budget; a retry needs
// the attempt limit and a token; a guarded call needs the breaker's leave
// (probe reports that it is the half-open probe). A refused retry returns
// last, the failure it would have retried, annotated.
func (p *callPolicy) admit(op string, attempt int, last error) (probe bool, err error) {
	if p == nil {
		return false, nil
	}
	if attempt == 1 {
		p.calls.Add(1)
		if p.budget != nil {
			p.budget.call()
		}
	} else {
		if p.maxAttempts > 0 && attempt > p.maxAttempts {
			return false, fmt.Errorf("gave up after %d attempts: %w", p.maxAttempts, last)
		}
		if p.budget != nil && !unbudgetedOps[op] && !p.budget.retry() {
			p.retriesRefused.Add(1)
			return false, fmt.Errorf("retry budget exhausted: %w", last)
		}
		p.retries.Add(1)
	}
	if p.breaker == nil || unguardedOps[op] {
		return false, nil
	}
	// A refusal carries the last unanswered attempt's error: on a retry,
	// the one being retried.
	return p.breaker.allow()
}

// record tells the breaker how an attempt went.
func (p *callPolicy) record(ctx context.Context, err error, probe bool, started time.Time) {
	if p == nil || p.breaker == nil {
		return
	}
	switch {
	case err == nil:
		p.breaker.record(answeredOutcome, nil, probe, started)
	case ctx.Err() != nil:
		p.breaker.record(canceledOutcome, err, probe, started)
	case unanswered(err):
		p.breaker.record(unansweredOutcome, toError(err), probe, started)
	default:
		p.breaker.record(answeredOutcome, nil, probe, started)
	}
}

// unanswered reports whether an attempt's error means ledgerd did not
// answer: UNAVAILABLE (no connection, a reset, a proxy's refusal) or
// DEADLINE_EXCEEDED.
func unanswered(err error) bool {
	code := status.Code(err)
	return code == codes.Unavailable || code == codes.DeadlineExceeded
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
