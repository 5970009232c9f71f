package ledger

import (
	"context"
	"fmt"
	"time"
)

// HeartbeatRequest extends a lease.
type HeartbeatRequest struct {
	Namespace    string
	Key          string
	FencingToken int64
	// LeaseTTL is the new lease duration from now; zero means the namespace
	// default.
	LeaseTTL time.Duration
	// Checkpoint, when not nil, replaces the stored checkpoint (an empty
	// non-nil slice clears it); nil keeps it.
	Checkpoint []byte
}

// Heartbeat extends the lease held with the current fencing token, even if
// its time ran out, as long as nobody took over; it returns the new expiry
// by the database's clock. It fails with a *ValidationError, ErrLeaseLost
// (another token is current, or the key is no longer leased) or
// ErrUnavailable.
func (s *Store) Heartbeat(ctx context.Context, req HeartbeatRequest) (time.Time, error) {
	expiresAt, err := s.heartbeat(ctx, req)
	if err != nil {
		return time.Time{}, fmt.Errorf("heartbeat %s/%s token %d: %w", req.Namespace, req.Key, req.FencingToken, err)
	}
	return expiresAt, nil
}

func (s *Store) heartbeat(ctx context.Context, req HeartbeatRequest) (time.Time, error) {
	if err := checkKey(s.limits, req.Namespace, req.Key); err != nil {
		return time.Time{}, err
	}
	if err := checkFencingToken(req.FencingToken); err != nil {
		return time.Time{}, err
	}
	if err := checkBytes("checkpoint", req.Checkpoint, s.limits.MaxCheckpointBytes); err != nil {
		return time.Time{}, err
	}
	ns, _, err := s.namespace(ctx, req.Namespace)
	if err != nil {
		return time.Time{}, err
	}
	ttl, err := s.limits.leaseTTL(req.LeaseTTL, ns)
	if err != nil {
		return time.Time{}, err
	}
	type heartbeatRow struct {
		LeaseExpiresAt time.Time `db:"lease_expires_at"`
	}
	found, err := queryRows[heartbeatRow](ctx, s.pool, query("heartbeat"),
		req.Namespace, req.Key, req.FencingToken, ttl.Milliseconds(), req.Checkpoint != nil, req.Checkpoint,
		s.heartbeatEventInterval.Milliseconds(), callerFrom(ctx))
	if err != nil {
		return time.Time{}, err
	}
	if len(found) == 0 {
		if err := s.recordRefusal(ctx, s.pool, EventRefusedStaleToken, req.Namespace, req.Key, "heartbeat", req.FencingToken, ""); err != nil {
			return time.Time{}, err
		}
		return time.Time{}, ErrLeaseLost
	}
	return found[0].LeaseExpiresAt, nil
}

// CompleteRequest records the result of the work.
type CompleteRequest struct {
	Namespace    string
	Key          string
	FencingToken int64
	Result       []byte
}

// Completion confirms a Complete.
type Completion struct {
	// CompletedAt is when the key was completed, by the database's clock.
	CompletedAt time.Time
	// AlreadyCompleted is true when the call repeated a recorded completion.
	AlreadyCompleted bool
}

// Complete stores the result under the current fencing token and finishes
// the key. It succeeds even if the lease time ran out, as long as nobody
// took over. Repeating it with the same token and result succeeds again
// (AlreadyCompleted). It fails with a *ValidationError, ErrLeaseLost,
// ErrResultConflict (a repeat with a different result) or ErrUnavailable.
func (s *Store) Complete(ctx context.Context, req CompleteRequest) (Completion, error) {
	completion, err := s.complete(ctx, req)
	if err != nil {
		return Completion{}, fmt.Errorf("complete %s/%s token %d: %w", req.Namespace, req.Key, req.FencingToken, err)
	}
	return completion, nil
}

func (s *Store) complete(ctx context.Context, req CompleteRequest) (Completion, error) {
	if err := checkKey(s.limits, req.Namespace, req.Key); err != nil {
		return Completion{}, err
	}
	if err := checkFencingToken(req.FencingToken); err != nil {
		return Completion{}, err
	}
	// The server's ceiling first, before the namespace's limit is read.
	if err := checkBytes("result", req.Result, s.limits.MaxResultBytes); err != nil {
		return Completion{}, err
	}
	ns, _, err := s.namespace(ctx, req.Namespace)
	if err != nil {
		return Completion{}, err
	}
	if err := checkBytes("result", req.Result, ns.MaxResultBytes); err != nil {
		return Completion{}, err
	}
	result := req.Result
	if result == nil {
		result = []byte{} // a completed entry always has a result, maybe empty
	}
	row, already, err := s.storeResult(ctx, req, result, ns)
	if err != nil {
		return Completion{}, err
	}
	return Completion{CompletedAt: derefTime(row.FinishedAt), AlreadyCompleted: already}, nil
}

// FailRequest records that the work failed.
type FailRequest struct {
	Namespace    string
	Key          string
	FencingToken int64
	Error        *WorkError
	// Retryable frees the key for the next Reserve; otherwise the failure is
	// permanent and every later Reserve answers Failed.
	Retryable bool
}

// FailResult confirms a Fail.
type FailResult struct {
	// State is StateReleased after a retryable failure, StateFailed after a
	// permanent one (or a retryable one that used up the namespace's
	// MaxAttempts).
	State State
	// AlreadyFailed is true when the call repeated a recorded failure.
	AlreadyFailed bool
}

// Fail records a failure under the current fencing token. A retryable
// failure frees the key (attempts and checkpoint kept); a permanent one
// stores the error for every later Reserve. Repeating it with the same
// token and error succeeds again (AlreadyFailed). It fails with a
// *ValidationError, ErrLeaseLost, ErrResultConflict or ErrUnavailable.
func (s *Store) Fail(ctx context.Context, req FailRequest) (FailResult, error) {
	result, err := s.fail(ctx, req)
	if err != nil {
		return FailResult{}, fmt.Errorf("fail %s/%s token %d: %w", req.Namespace, req.Key, req.FencingToken, err)
	}
	return result, nil
}

func (s *Store) fail(ctx context.Context, req FailRequest) (FailResult, error) {
	if err := checkKey(s.limits, req.Namespace, req.Key); err != nil {
		return FailResult{}, err
	}
	if err := checkFencingToken(req.FencingToken); err != nil {
		return FailResult{}, err
	}
	if err := checkWorkError(s.limits, req.Error); err != nil {
		return FailResult{}, err
	}
	ns, _, err := s.namespace(ctx, req.Namespace)
	if err != nil {
		return FailResult{}, err
	}
	// A retryable failure frees the key, unless the namespace's maximum
	// attempts are used up: then it is permanent (decided in the statement).
	finalState := is(StateFailed)
	if req.Retryable {
		finalState = func(state State) bool { return state == StateReleased || state == StateFailed }
	}
	row, already, err := s.guardedUpdate(ctx, s.pool, "fail", req.Namespace, req.Key, req.FencingToken, finalState, query("fail"),
		req.Namespace, req.Key, req.FencingToken, req.Error.Code, req.Error.Message, req.Retryable,
		ns.Retention.Milliseconds(), callerFrom(ctx), ns.MaxAttempts)
	if err != nil {
		return FailResult{}, err
	}
	return FailResult{State: row.State, AlreadyFailed: already}, nil
}

// ReleaseRequest gives a lease up.
type ReleaseRequest struct {
	Namespace    string
	Key          string
	FencingToken int64
}

// Release gives up the lease held with the current fencing token, so that
// the next Reserve acquires the key at once. It reports whether the call
// repeated a recorded release. It fails with a *ValidationError,
// ErrLeaseLost or ErrUnavailable.
func (s *Store) Release(ctx context.Context, req ReleaseRequest) (alreadyReleased bool, err error) {
	if err := checkKey(s.limits, req.Namespace, req.Key); err != nil {
		return false, fmt.Errorf("release %s/%s: %w", req.Namespace, req.Key, err)
	}
	if err := checkFencingToken(req.FencingToken); err != nil {
		return false, fmt.Errorf("release %s/%s: %w", req.Namespace, req.Key, err)
	}
	_, already, err := s.guardedUpdate(ctx, s.pool, "release", req.Namespace, req.Key, req.FencingToken, is(StateReleased), query("release"),
		req.Namespace, req.Key, req.FencingToken, callerFrom(ctx))
	if err != nil {
		return false, fmt.Errorf("release %s/%s token %d: %w", req.Namespace, req.Key, req.FencingToken, err)
	}
	return already, nil
}

func is(want State) func(State) bool { return func(got State) bool { return got == want } }
