package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrQuotaExceeded is matched by every *QuotaError.
var ErrQuotaExceeded = errors.New("quota exceeded")

// The quotas a QuotaError names, as the namespace settings spell them.
const (
	QuotaHeldLeases  = "max_held_leases"
	QuotaStoredBytes = "max_stored_bytes"
)

// QuotaError reports a grant or a result refused because it would take its
// namespace over a quota. Nothing was changed: a refused Reserve granted
// nothing, and a refused Complete left the lease held, so that its holder
// may Release or Fail the key, or Complete it once the quota allows.
type QuotaError struct {
	Namespace string
	// Quota is QuotaHeldLeases or QuotaStoredBytes.
	Quota string
	// Limit is the namespace's quota.
	Limit int64
	// Usage is what the namespace would have used with the request.
	Usage int64
}

// Error says which quota, its limit and the usage refused.
func (e *QuotaError) Error() string {
	return fmt.Sprintf("namespace %s is at its %s quota: %d would be over the limit of %d", e.Namespace, e.Quota, e.Usage, e.Limit)
}

// Is makes errors.Is(err, ErrQuotaExceeded) true.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// Usage is what a namespace uses of its quotas.
type Usage struct {
	// HeldLeases is the number of unexpired leases.
	HeldLeases int64
	// StoredBytes is the bytes of the stored results; counted only while
	// the namespace has a stored-bytes quota (StoredBytesCounted).
	StoredBytes        int64
	StoredBytesCounted bool
}

// NamespaceUsage returns what a namespace uses of its quotas. It fails with
// a *ValidationError, ErrNotFound or ErrUnavailable.
func (s *Store) NamespaceUsage(ctx context.Context, name string) (Usage, error) {
	if err := checkNamespace(name); err != nil {
		return Usage{}, fmt.Errorf("namespace usage %s: %w", name, err)
	}
	if err := s.requireNamespace(ctx, name); err != nil {
		return Usage{}, err
	}
	var usage Usage
	err := s.pool.QueryRow(ctx, query("quota_held_leases"), name).Scan(&usage.HeldLeases)
	if err == nil {
		err = s.pool.QueryRow(ctx, `SELECT stored_bytes FROM namespace_usage WHERE namespace = $1`, name).Scan(&usage.StoredBytes)
		usage.StoredBytesCounted = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil
		}
	}
	if err != nil {
		return Usage{}, fmt.Errorf("namespace usage %s: %w", name, dbError(err))
	}
	return usage, nil
}

// reserveWithinQuota is reserveOnce for a namespace with a held-leases
// quota. The grants of the namespace are serialized by an advisory lock
// held to the end of the transaction; a grant is made, the unexpired leases
// are counted, and the grant is rolled back if the count is over the
// quota. So the quota holds exactly, whatever the number of replicas, at
// the price of one grant per commit in that namespace. Replays and
// IN_PROGRESS answers write nothing and are never refused.
func (s *Store) reserveWithinQuota(ctx context.Context, req ReserveRequest, ttl time.Duration, ns NamespaceSettings) (Reservation, error) {
	var r Reservation
	var refused error // a refusal whose audit event must be committed
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, query("quota_lock"), req.Namespace); err != nil {
			return err
		}
		var err error
		r, err = s.reserveOnce(ctx, tx, req, ttl, ns)
		if errors.Is(err, ErrFingerprintMismatch) {
			refused = err
			return nil
		}
		if err != nil || !r.granted {
			return err
		}
		var held int64
		if err := tx.QueryRow(ctx, query("quota_held_leases"), req.Namespace).Scan(&held); err != nil {
			return err
		}
		if held > ns.MaxHeldLeases {
			return &QuotaError{Namespace: req.Namespace, Quota: QuotaHeldLeases, Limit: ns.MaxHeldLeases, Usage: held}
		}
		return nil
	})
	if err == nil {
		err = refused
	}
	return r, dbError(err)
}

// storeResult runs the Complete statement. In a namespace with a
// stored-bytes quota, it runs in a transaction with a check: the statement
// adds the result's bytes to the namespace's usage row, which stays locked
// to the end of the transaction, and the completion is rolled back if the
// sum is over the quota. Completes of that namespace are serialized by the
// row, one per commit.
func (s *Store) storeResult(ctx context.Context, req CompleteRequest, result []byte, ns NamespaceSettings) (guardRow, bool, error) {
	complete := func(q querier) (guardRow, bool, error) {
		return s.guardedUpdate(ctx, q, "complete", req.Namespace, req.Key, req.FencingToken, is(StateCompleted), query("complete"),
			req.Namespace, req.Key, req.FencingToken, result, ns.Retention.Milliseconds(), callerFrom(ctx))
	}
	if ns.MaxStoredBytes == 0 && s.coalesce != nil {
		item := newCompleteItem(ctx, req, ns)
		return s.guarded(ctx, s.pool, "complete", req.Namespace, req.Key, req.FencingToken, is(StateCompleted), func() (*guardRow, error) {
			return s.coalesce.completes.do(ctx, item)
		})
	}
	if ns.MaxStoredBytes == 0 {
		return complete(s.pool)
	}
	var row guardRow
	var already bool
	var refused error // a refusal whose audit event must be committed
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		row, already, err = complete(tx)
		if errors.Is(err, ErrLeaseLost) {
			refused = err
			return nil
		}
		if err != nil || already {
			return err
		}
		var stored int64
		err = tx.QueryRow(ctx, `SELECT stored_bytes FROM namespace_usage WHERE namespace = $1`, req.Namespace).Scan(&stored)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // the quota was unset meanwhile
		case err != nil:
			return err
		case stored > ns.MaxStoredBytes:
			return &QuotaError{Namespace: req.Namespace, Quota: QuotaStoredBytes, Limit: ns.MaxStoredBytes, Usage: stored}
		}
		return nil
	})
	if err == nil {
		err = refused
	}
	return row, already, dbError(err)
}

// trackStoredBytes starts or stops counting a namespace's stored bytes when
// its stored-bytes quota is set or unset, in the transaction that changes
// the setting. Starting locks entries in SHARE mode for the time of the sum
// (see quota_track.sql): writes to every namespace wait that long, once.
func trackStoredBytes(ctx context.Context, tx pgx.Tx, name string, before, after int64) error {
	switch {
	case before == 0 && after > 0:
		if _, err := tx.Exec(ctx, `LOCK TABLE entries IN SHARE MODE`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, query("quota_track"), name)
		return err
	case before > 0 && after == 0:
		_, err := tx.Exec(ctx, `DELETE FROM namespace_usage WHERE namespace = $1`, name)
		return err
	}
	return nil
}
