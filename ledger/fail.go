package ledger

import (
	"context"
	"fmt"
)

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
// *ValidationError, ErrLeaseLost, ErrResultConflict, a *QuotaError (an
// error larger than the one it replaces, over the stored-bytes quota: the
// lease stays held, and Release, never refused, frees the key) or
// ErrUnavailable.
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
