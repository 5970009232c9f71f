package ledger

import (
	"context"
	"fmt"
)

// ReleaseRequest gives a lease up.
type ReleaseRequest struct {
	Namespace    string
	Key          string
	FencingToken int64
}

// Release gives up the lease held with the current fencing token, so that
// the next Reserve acquires the key at once. It reports alreadyReleased
// when the key was already released under this token, and then changes and
// records nothing: by an earlier Release (a retry after a lost response),
// or by the holder's own retryable Fail. It fails with a *ValidationError,
// ErrLeaseLost (another token is current, or the key finished) or
// ErrUnavailable.
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
