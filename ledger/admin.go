package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrNotLeased means a ForceRelease found the key not leased.
var ErrNotLeased = errors.New("the key is not leased")

// checkReason enforces an admin action's reason: required, bounded.
func checkReason(l Limits, reason string) error {
	return checkText("reason", reason, true, l.MaxReasonBytes)
}

// ForceReleaseRequest ends a lease on an admin's behalf.
type ForceReleaseRequest struct {
	Namespace string
	Key       string
	// Reason is recorded in the audit event; required.
	Reason string
	// FencingToken, when not zero, releases only that grant.
	FencingToken int64
}

// ForceRelease ends the current lease of a key, whoever holds it, and
// records who did it and why: the next Reserve takes the key over with a
// higher fencing token, and the old holder's calls get ErrLeaseLost. With a
// FencingToken, only that grant is released, and repeating the call
// succeeds (already). It fails with a *ValidationError, ErrNotFound,
// ErrNotLeased, ErrLeaseLost (the token is not current) or ErrUnavailable.
func (s *Store) ForceRelease(ctx context.Context, req ForceReleaseRequest) (entry Entry, already bool, err error) {
	entry, already, err = s.forceRelease(ctx, req)
	if err != nil {
		return Entry{}, false, fmt.Errorf("force-release %s/%s: %w", req.Namespace, req.Key, err)
	}
	return entry, already, nil
}

func (s *Store) forceRelease(ctx context.Context, req ForceReleaseRequest) (Entry, bool, error) {
	if err := checkKey(s.limits, req.Namespace, req.Key); err != nil {
		return Entry{}, false, err
	}
	if err := checkReason(s.limits, req.Reason); err != nil {
		return Entry{}, false, err
	}
	if req.FencingToken < 0 {
		return Entry{}, false, invalid("fencing_token", "must not be negative, got %d", req.FencingToken)
	}
	found, err := queryRows[guardRow](ctx, s.pool, query("force_release"), req.Namespace, req.Key, req.FencingToken, req.Reason, callerFrom(ctx))
	if err != nil {
		return Entry{}, false, err
	}
	already := false
	switch {
	case len(found) == 0:
		return Entry{}, false, ErrNotFound
	case found[0].Changed:
	case req.FencingToken != 0 && found[0].State == StateReleased && found[0].FencingToken == req.FencingToken+1:
		already = true // this grant was force-released (the token moved on by one)
	case req.FencingToken != 0 && found[0].FencingToken != req.FencingToken:
		return Entry{}, false, ErrLeaseLost
	default:
		return Entry{}, false, ErrNotLeased
	}
	entry, err := s.lookup(ctx, req.Namespace, req.Key)
	return entry, already, err
}

// ResetKeyRequest resets a key on an admin's behalf.
type ResetKeyRequest struct {
	Namespace string
	Key       string
	// Reason is recorded in the audit event; required.
	Reason string
	// FencingToken, when not zero, resets the key only if this is its
	// current token, which makes the call retry-safe.
	FencingToken int64
}

// ResetKey forgets a key's result, failure or lease so that its work runs
// again (after a bad deploy, say), and records who did it and why: the key
// becomes released with its attempts back to zero, its fencing token moves
// on, and the next Reserve acquires it with a higher token still. It fails
// with a *ValidationError, ErrNotFound, ErrLeaseLost (FencingToken is not
// current) or ErrUnavailable.
func (s *Store) ResetKey(ctx context.Context, req ResetKeyRequest) (Entry, error) {
	entry, err := s.resetKey(ctx, req)
	if err != nil {
		return Entry{}, fmt.Errorf("reset %s/%s: %w", req.Namespace, req.Key, err)
	}
	return entry, nil
}

func (s *Store) resetKey(ctx context.Context, req ResetKeyRequest) (Entry, error) {
	namespace, key, reason := req.Namespace, req.Key, req.Reason
	if err := checkKey(s.limits, namespace, key); err != nil {
		return Entry{}, err
	}
	if err := checkReason(s.limits, reason); err != nil {
		return Entry{}, err
	}
	if req.FencingToken < 0 {
		return Entry{}, invalid("fencing_token", "must not be negative, got %d", req.FencingToken)
	}
	var entry Entry
	// The previous state is read with the row locked, in the same
	// transaction, so that the event tells what the reset really undid.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var previousState, previousOwner string
		var token int64
		err := tx.QueryRow(ctx, `SELECT state, owner, fencing_token FROM entries WHERE namespace = $1 AND key = $2 FOR UPDATE`,
			namespace, key).Scan(&previousState, &previousOwner, &token)
		if err != nil {
			return err // pgx.ErrNoRows becomes ErrNotFound
		}
		if req.FencingToken != 0 && req.FencingToken != token {
			return ErrLeaseLost
		}
		rows, err := tx.Query(ctx, query("reset"), namespace, key, reason, callerFrom(ctx), previousState, previousOwner)
		if err != nil {
			return err
		}
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[entryRow])
		entry = row.toEntry()
		return err
	})
	return entry, dbError(err)
}

// purgeBatchSize bounds the entries one retention statement deletes, so
// that its locks are short.
const purgeBatchSize = 500

// PurgeExpired removes a namespace's completed and failed entries whose
// retention has elapsed, now, in batches, recording a purged event (with the
// caller and the reason) for each. It returns how many it removed. It fails
// with a *ValidationError or ErrUnavailable (having removed some, maybe).
func (s *Store) PurgeExpired(ctx context.Context, namespace, reason string) (int64, error) {
	if err := checkNamespace(namespace); err != nil {
		return 0, fmt.Errorf("purge %s: %w", namespace, err)
	}
	if err := checkReason(s.limits, reason); err != nil {
		return 0, fmt.Errorf("purge %s: %w", namespace, err)
	}
	if err := s.requireNamespace(ctx, namespace); err != nil {
		return 0, fmt.Errorf("purge %s: %w", namespace, err)
	}
	purged, err := s.purgeExpired(ctx, namespace, reason)
	if err != nil {
		return purged[namespace], fmt.Errorf("purge %s: %w", namespace, err)
	}
	return purged[namespace], nil
}

// purgeExpired deletes expired entries batch by batch until none is left:
// of one namespace, or of all when namespace is empty. It returns the counts
// by namespace.
func (s *Store) purgeExpired(ctx context.Context, namespace, reason string) (map[string]int64, error) {
	type purgedRow struct {
		Namespace string `db:"namespace"`
		Purged    int64  `db:"purged"`
	}
	var namespaceArg, reasonArg any
	if namespace != "" {
		namespaceArg = namespace
	}
	if reason != "" {
		reasonArg = reason
	}
	counts := map[string]int64{}
	for {
		rows, err := queryRows[purgedRow](ctx, s.pool, query("purge_expired"), namespaceArg, purgeBatchSize, callerFrom(ctx), reasonArg)
		if err != nil {
			return counts, err
		}
		var batch int64
		for _, row := range rows {
			counts[row.Namespace] += row.Purged
			batch += row.Purged
		}
		if batch < purgeBatchSize {
			return counts, nil
		}
	}
}
