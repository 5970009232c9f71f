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
