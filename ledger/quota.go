package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrQuotaExceeded is matched by every *QuotaError.
var ErrQuotaExceeded = errors.New("quota exceeded")

// The quotas a QuotaError names, as the namespace settings spell them.
const (
	QuotaHeldLeases  = "max_held_leases"
	QuotaStoredBytes = "max_stored_bytes"
)

// QuotaError reports a grant or a write refused because it would take its
// namespace over a quota. Nothing was changed: a refused Reserve granted
// nothing, and a refused Heartbeat, Complete or Fail left the lease held,
// so that its holder may Release the key (Release never grows the stored
// bytes, and is never refused), or write less, or retry once the quota
// allows.
type QuotaError struct {
	Namespace string
	// Quota is QuotaHeldLeases, QuotaStoredBytes or
	// QuotaNamespacesPerPattern.
	Quota string
	// Pattern is the binding pattern whose namespaces are counted, for
	// QuotaNamespacesPerPattern (Namespace is then the one not created).
	Pattern string
	// Limit is the namespace's quota (the server's, for
	// QuotaNamespacesPerPattern).
	Limit int64
	// Usage is what the namespace (or the pattern) would have used with
	// the request.
	Usage int64
}

// Error says which quota, its limit and the usage refused.
func (e *QuotaError) Error() string {
	if e.Quota == QuotaNamespacesPerPattern {
		return fmt.Sprintf("namespace %s not created: the binding pattern %s would cover %d namespaces, over the limit of %d (%s)",
			e.Namespace, e.Pattern, e.Usage, e.Limit, e.Quota)
	}
	return fmt.Sprintf("namespace %s is at its %s quota: %d would be over the limit of %d", e.Namespace, e.Quota, e.Usage, e.Limit)
}

// Is makes errors.Is(err, ErrQuotaExceeded) true.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// Usage is what a namespace uses of its quotas.
type Usage struct {
	// HeldLeases is the number of unexpired leases.
	HeldLeases int64
	// ExpiredLeases is the number of leased entries whose lease has run
	// out by the database's clock, not yet taken over: the stuck keys.
	ExpiredLeases int64
	// StoredBytes is the sum of the stored bytes of the namespace's entries
	// (see NamespaceSettings.MaxStoredBytes); counted only while the
	// namespace has a stored-bytes quota (StoredBytesCounted).
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
	err := s.pool.QueryRow(ctx, query("namespace_leases"), name).Scan(&usage.HeldLeases, &usage.ExpiredLeases)
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

// quotaRefusalCode is the SQLSTATE of a write refused by the stored-bytes
// quota in its statement (namespace_usage_add, migrations/00007).
const quotaRefusalCode = "LQ001"

// quotaRefusal returns the *QuotaError of a write that its statement
// refused over the stored-bytes quota, or nil for any other error. The
// statement failed, so nothing it would have written was kept.
func quotaRefusal(err error) *QuotaError {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != quotaRefusalCode {
		return nil
	}
	var detail struct {
		Namespace string `json:"namespace"`
		Limit     int64  `json:"limit"`
		Usage     int64  `json:"usage"`
	}
	if json.Unmarshal([]byte(pgErr.Detail), &detail) != nil {
		return nil // not ours: let it through as it is
	}
	return &QuotaError{Namespace: detail.Namespace, Quota: QuotaStoredBytes, Limit: detail.Limit, Usage: detail.Usage}
}
