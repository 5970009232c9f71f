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
// (another token is current, or the key is no longer leased), a
// *QuotaError (a larger checkpoint over the stored-bytes quota: the lease
// is not extended either) or ErrUnavailable.
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
		Changed        bool       `db:"changed"`
		LeaseExpiresAt *time.Time `db:"lease_expires_at"`
	}
	return retryRaces(ctx, func() (time.Time, error) {
		found, err := queryRows[heartbeatRow](ctx, s.pool, query("heartbeat"),
			req.Namespace, req.Key, req.FencingToken, ttl.Milliseconds(), req.Checkpoint != nil, req.Checkpoint,
			s.heartbeatEventInterval.Milliseconds(), callerFrom(ctx))
		switch {
		case err != nil:
			return time.Time{}, err
		case len(found) == 0:
			if err := s.recordRefusal(ctx, s.pool, EventRefusedStaleToken, req.Namespace, req.Key, "heartbeat", req.FencingToken, ""); err != nil {
				return time.Time{}, err
			}
			return time.Time{}, ErrLeaseLost
		case !found[0].Changed:
			// Still leased under this token, but changed after the
			// statement's snapshot (see heartbeat.sql): read again.
			return time.Time{}, errRaced
		}
		return derefTime(found[0].LeaseExpiresAt), nil
	})
}
