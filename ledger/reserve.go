package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReserveRequest asks for the lease of a key.
type ReserveRequest struct {
	Namespace string
	Key       string
	// Owner names the worker, e.g. "host/pid/attempt". A Reserve by the owner
	// that holds a current lease returns the same fencing token.
	Owner string
	// LeaseTTL is the lease duration; zero means the namespace default.
	LeaseTTL time.Duration
	// Fingerprint identifies the request payload; the first Reserve stores
	// it and later ones must match it (empty matches only empty).
	Fingerprint []byte
	// Metadata replaces the entry's labels on a grant when not empty.
	Metadata map[string]string
	// WaitTimeout, when positive, makes a Reserve that would answer
	// InProgress wait for the holder to finish or its lease to run out, and
	// answer then as a fresh Reserve would; InProgress if the wait runs out
	// first. It is shortened to Limits.MaxWait, and to end a little before
	// ctx's deadline. See Listen.
	WaitTimeout time.Duration
}

// Outcome is what Reserve decided. Outcomes are control flow, not errors.
type Outcome int

// The outcomes of Reserve.
const (
	// Acquired: the caller holds the lease and must do the work.
	Acquired Outcome = iota + 1
	// Completed: the key is done; the reservation carries its result.
	Completed
	// InProgress: another owner holds an unexpired lease.
	InProgress
	// Failed: the key failed permanently; the reservation carries the error.
	Failed
)

// String returns the outcome's name as docs/design.md, "Outcomes", spells it.
func (o Outcome) String() string {
	switch o {
	case Acquired:
		return "ACQUIRED"
	case Completed:
		return "COMPLETED"
	case InProgress:
		return "IN_PROGRESS"
	case Failed:
		return "FAILED"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Reservation is Reserve's answer. Which fields are set depends on Outcome.
type Reservation struct {
	Outcome Outcome

	// FencingToken is the granted token (Acquired), or the token of the grant
	// that finished the key (Completed, Failed).
	FencingToken int64
	// LeaseExpiresAt is the lease expiry by the database's clock (Acquired,
	// InProgress).
	LeaseExpiresAt time.Time
	// LeaseTTL is the granted lease duration (Acquired).
	LeaseTTL time.Duration
	// Attempt is the grant's number, 1 for the first (Acquired, InProgress),
	// or the number of grants (Failed).
	Attempt int
	// Takeover is true when this grant took over an earlier one (Acquired).
	Takeover bool
	// PreviousOwner is the owner that was taken over from (Acquired).
	PreviousOwner string
	// Checkpoint is the last checkpoint stored by a holder (Acquired).
	Checkpoint []byte

	// Owner is the holder (InProgress) or the owner that finished the key
	// (Completed, Failed).
	Owner string
	// RetryAfter hints when to ask again: the time left on the holder's lease,
	// clamped to [50ms, 5s] (InProgress).
	RetryAfter time.Duration

	// Result is the stored result (Completed).
	Result []byte
	// Error is the stored error (Failed).
	Error *WorkError
	// FinishedAt is when the key completed or failed (Completed, Failed).
	FinishedAt time.Time

	// leaseRemaining is the holder's remaining lease by the database's clock
	// (InProgress), for a waiter's timer.
	leaseRemaining time.Duration
	// granted is true when this call granted a lease (not a same-owner
	// extension), which a held-leases quota counts.
	granted bool
}

// The bounds of InProgress's RetryAfter hint.
const (
	minRetryAfter = 50 * time.Millisecond
	maxRetryAfter = 5 * time.Second
)

type reserveRow struct {
	Inserted bool `db:"inserted"`
	entryRow
}

// Reserve asks for the right to do the work for a key; see Outcome for the
// answers. It fails with a *ValidationError for bad input (changing
// nothing), ErrFingerprintMismatch, a *QuotaError (a grant over the
// held-leases quota, or a new entry, owner or labels over the stored-bytes
// quota), or ErrUnavailable.
//
// The common cases cost one statement (see insertOrRead): a fresh key is
// inserted with its event, and a finished or held key is read without
// writing. Taking over a released or expired lease costs a second,
// conditional statement (see decide).
func (s *Store) Reserve(ctx context.Context, req ReserveRequest) (Reservation, error) {
	reservation, err := s.reserve(ctx, req)
	if err != nil {
		return Reservation{}, fmt.Errorf("reserve %s/%s: %w", req.Namespace, req.Key, err)
	}
	return reservation, nil
}

func (s *Store) reserve(ctx context.Context, req ReserveRequest) (Reservation, error) {
	if err := s.checkReserve(req); err != nil {
		return Reservation{}, err
	}
	ns, stored, err := s.namespace(ctx, req.Namespace)
	if err != nil {
		return Reservation{}, err
	}
	ttl, err := s.limits.leaseTTL(req.LeaseTTL, ns)
	if err != nil {
		return Reservation{}, err
	}
	if !stored {
		if ns, ttl, err = s.createForReserve(ctx, req.Namespace, req.LeaseTTL); err != nil {
			return Reservation{}, err
		}
	}
	once := func() (Reservation, error) {
		if ns.MaxHeldLeases > 0 {
			return s.reserveWithinQuota(ctx, req, ttl, ns)
		}
		return s.reserveOnce(ctx, s.pool, req, ttl, ns)
	}
	if req.WaitTimeout == 0 {
		return retryRaces(ctx, once)
	}

	// Register before the first read, so that no change after it is missed.
	changed, unregister := s.waits.register(req.Namespace, req.Key)
	defer unregister()
	deadline := s.waitDeadline(ctx, req.WaitTimeout)
	for {
		r, err := retryRaces(ctx, once)
		if err != nil || r.Outcome != InProgress || !time.Now().Before(deadline) {
			return r, err
		}
		if err := s.awaitChange(ctx, req, r, changed, deadline); errors.Is(err, errWaitsEnded) || errors.Is(err, errWaitOver) {
			return r, nil
		} else if err != nil {
			return Reservation{}, err
		}
	}
}

// checkReserve checks a Reserve's fields against the server's limits; the
// lease TTL is checked against its namespace's (Limits.leaseTTL).
func (s *Store) checkReserve(req ReserveRequest) error {
	if err := checkKey(s.limits, req.Namespace, req.Key); err != nil {
		return err
	}
	if err := checkText("owner", req.Owner, true, s.limits.MaxOwnerBytes); err != nil {
		return err
	}
	if err := checkBytes("fingerprint", req.Fingerprint, s.limits.MaxFingerprintBytes); err != nil {
		return err
	}
	if req.WaitTimeout < 0 {
		return invalid("wait_timeout", "must not be negative, got %s", req.WaitTimeout)
	}
	return checkMetadata(s.limits, req.Metadata)
}

// createForReserve creates a namespace on its first Reserve, with the
// server's default settings (or reads it, if a concurrent call created it
// first), and returns its settings and the lease TTL they grant. It is
// called once the request passed validation, so that a refused request
// creates nothing.
func (s *Store) createForReserve(ctx context.Context, namespace string, leaseTTL time.Duration) (NamespaceSettings, time.Duration, error) {
	ns, err := s.ensureNamespace(ctx, namespace)
	if err != nil {
		return NamespaceSettings{}, 0, err
	}
	ttl, err := s.limits.leaseTTL(leaseTTL, ns)
	return ns, ttl, err
}

// reserveOnce reads or inserts the entry and decides, with q: the pool, or
// the transaction of a quota. It reports errRaced when a concurrent change
// got in between, and is then run again.
func (s *Store) reserveOnce(ctx context.Context, q querier, req ReserveRequest, ttl time.Duration, ns NamespaceSettings) (Reservation, error) {
	row, err := s.insertOrRead(ctx, q, req, ttl, ns)
	if err != nil {
		return Reservation{}, err
	}
	if row == nil {
		// A concurrent Reserve inserted the key after our snapshot.
		return Reservation{}, errRaced
	}
	return s.decide(ctx, q, req, ttl, ns, row)
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

// decide answers a Reserve from the row its first statement returned,
// with one more statement for an extension, a takeover or an exhausted key.
func (s *Store) decide(ctx context.Context, q querier, req ReserveRequest, ttl time.Duration, ns NamespaceSettings, row *reserveRow) (Reservation, error) {
	if row.Inserted {
		return acquired(&row.entryRow, ttl, false, ""), nil
	}

	// The fingerprint is checked before anything else is answered, on every
	// path: a mismatch is never hidden behind a replay or IN_PROGRESS.
	if !sameFingerprint(row.Fingerprint, req.Fingerprint) {
		if err := s.recordRefusal(ctx, q, EventRefusedFingerprint, req.Namespace, req.Key, "reserve", 0, req.Owner); err != nil {
			return Reservation{}, err
		}
		return Reservation{}, ErrFingerprintMismatch
	}
	switch {
	case row.State == StateCompleted:
		return Reservation{
			Outcome:      Completed,
			FencingToken: row.FencingToken,
			Owner:        row.Owner,
			Result:       row.Result,
			FinishedAt:   derefTime(row.FinishedAt),
		}, nil
	case row.State == StateFailed:
		return failed(&row.entryRow), nil
	case row.State == StateLeased && !row.LeaseExpired && row.Owner == req.Owner:
		return s.extend(ctx, q, req, ttl, row.FencingToken)
	case row.State == StateLeased && !row.LeaseExpired:
		return inProgress(&row.entryRow), nil
	case row.State == StateLeased && ns.MaxAttempts > 0 && int(row.Attempts) >= ns.MaxAttempts:
		// The lease expired on the last allowed attempt: the worker
		// crashed or hung that many times. A poison pill must not be
		// retried forever.
		return s.exhaust(ctx, q, req, &row.entryRow, ns)
	default: // released, or leased with an expired lease
		return s.takeOver(ctx, q, req, ttl, &row.entryRow)
	}
}

// extend serves a same-owner retry while its lease is current: same token,
// lease extended.
func (s *Store) extend(ctx context.Context, q querier, req ReserveRequest, ttl time.Duration, token int64) (Reservation, error) {
	found, err := queryRows[entryRow](ctx, q, query("reserve_extend"),
		req.Namespace, req.Key, req.Owner, ttl.Milliseconds(), metadataArg(req.Metadata), token)
	if err != nil {
		return Reservation{}, err
	}
	if len(found) == 0 {
		return Reservation{}, errRaced // the lease ran out or changed hands meanwhile
	}
	r := acquired(&found[0], ttl, found[0].Attempts > 1, "")
	r.granted = false // the lease was held already
	return r, nil
}

// exhaust fails a key whose lease expired on its last allowed attempt.
func (s *Store) exhaust(ctx context.Context, q querier, req ReserveRequest, previous *entryRow, ns NamespaceSettings) (Reservation, error) {
	message := fmt.Sprintf("the lease expired on attempt %d of %d (max_attempts): the worker crashed or hung every time", previous.Attempts, ns.MaxAttempts)
	found, err := queryRows[entryRow](ctx, q, query("reserve_exhaust"), req.Namespace, req.Key, previous.FencingToken,
		message, ns.Retention.Milliseconds(), callerFrom(ctx))
	if err != nil {
		return Reservation{}, err
	}
	if len(found) == 0 {
		return Reservation{}, errRaced // the holder heartbeated or finished meanwhile
	}
	return failed(&found[0]), nil
}

// takeOver grants a new lease (token + 1) over a released or expired one.
func (s *Store) takeOver(ctx context.Context, q querier, req ReserveRequest, ttl time.Duration, previous *entryRow) (Reservation, error) {
	found, err := queryRows[entryRow](ctx, q, query("reserve_takeover"),
		req.Namespace, req.Key, req.Owner, ttl.Milliseconds(), metadataArg(req.Metadata),
		previous.FencingToken, callerFrom(ctx), previous.Owner, string(previous.State))
	if err != nil {
		return Reservation{}, err
	}
	if len(found) == 0 {
		return Reservation{}, errRaced // someone else took over, or the holder heartbeated
	}
	return acquired(&found[0], ttl, true, previous.Owner), nil
}

func acquired(row *entryRow, ttl time.Duration, takeover bool, previousOwner string) Reservation {
	return Reservation{
		Outcome:        Acquired,
		FencingToken:   row.FencingToken,
		LeaseExpiresAt: derefTime(row.LeaseExpiresAt),
		LeaseTTL:       ttl,
		Attempt:        int(row.Attempts),
		Takeover:       takeover,
		PreviousOwner:  previousOwner,
		Checkpoint:     row.Checkpoint,
		Owner:          row.Owner,
		granted:        true,
	}
}

func inProgress(row *entryRow) Reservation {
	remaining := time.Duration(row.LeaseRemainingMS) * time.Millisecond
	return Reservation{
		Outcome:        InProgress,
		FencingToken:   row.FencingToken,
		Owner:          row.Owner,
		LeaseExpiresAt: derefTime(row.LeaseExpiresAt),
		Attempt:        int(row.Attempts),
		RetryAfter:     min(max(remaining, minRetryAfter), maxRetryAfter),
		leaseRemaining: remaining,
	}
}

func failed(row *entryRow) Reservation {
	return Reservation{
		Outcome:      Failed,
		FencingToken: row.FencingToken,
		Owner:        row.Owner,
		Attempt:      int(row.Attempts),
		Error:        row.workError(),
		FinishedAt:   derefTime(row.FinishedAt),
	}
}

// metadataArg passes metadata to a statement that keeps the stored labels
// when given NULL.
func metadataArg(metadata map[string]string) any {
	if len(metadata) == 0 {
		return nil
	}
	return metadata
}

// reserveItem is the first statement of one Reserve, as its SQL takes it.
type reserveItem struct {
	namespace, key, owner string
	ttlMS                 int64
	fingerprint           []byte
	metadata              map[string]string
	caller                string
}

// newReserveItem is req's first statement. A stored fingerprint and stored
// labels are never NULL: absent ones are stored empty.
func newReserveItem(ctx context.Context, req ReserveRequest, ttl time.Duration) reserveItem {
	return reserveItem{
		namespace: req.Namespace, key: req.Key, owner: req.Owner, ttlMS: ttl.Milliseconds(),
		fingerprint: emptyIfNil(req.Fingerprint), metadata: emptyMapIfNil(req.Metadata), caller: callerFrom(ctx),
	}
}

func (it reserveItem) id() string { return it.namespace + "\x00" + it.key }

// insertOrRead runs the first statement of a Reserve: it inserts a fresh
// key with its first lease and 'reserved' event, or reads the entry. With
// coalescing on and q the pool, the statement is gathered with concurrent
// Reserves' into one (see coalesce.go); in a transaction, with coalescing
// off, or in a namespace with a stored-bytes quota (whose refusals would
// fail the whole gathered statement), it runs alone. The row is nil when a
// concurrent insert hid the key from the statement's snapshot.
func (s *Store) insertOrRead(ctx context.Context, q querier, req ReserveRequest, ttl time.Duration, ns NamespaceSettings) (*reserveRow, error) {
	item := newReserveItem(ctx, req, ttl)
	if _, inTx := q.(pgx.Tx); s.coalesce != nil && !inTx && ns.MaxStoredBytes == 0 {
		return s.coalesce.reserves.do(ctx, item)
	}
	return insertOrReadOne(ctx, q, item)
}

// insertOrReadOne runs the first statement of one Reserve
// (reserve_insert.sql): the row, or nil when a concurrent insert hid it.
func insertOrReadOne(ctx context.Context, q querier, item reserveItem) (*reserveRow, error) {
	return queryOne[reserveRow](ctx, q, query("reserve_insert"),
		item.namespace, item.key, item.owner, item.ttlMS, item.fingerprint, item.metadata, item.caller)
}

// insertOrReadMany runs the first statement of Reserve for many distinct
// keys at once (reserve_insert_batch.sql, the twin of reserve_insert.sql)
// and returns each item's row, nil when a concurrent insert hid it.
func insertOrReadMany(ctx context.Context, q querier, items []reserveItem) ([]*reserveRow, error) {
	namespaces, keys, owners := make([]string, len(items)), make([]string, len(items)), make([]string, len(items))
	ttls, fingerprints := make([]int64, len(items)), make([][]byte, len(items))
	metadata, callers := make([]map[string]string, len(items)), make([]string, len(items))
	for i, it := range items {
		namespaces[i], keys[i], owners[i], ttls[i] = it.namespace, it.key, it.owner, it.ttlMS
		fingerprints[i], metadata[i], callers[i] = it.fingerprint, it.metadata, it.caller
	}
	return queryNumbered[numberedReserveRow, reserveRow](ctx, q, len(items), query("reserve_insert_batch"),
		namespaces, keys, owners, ttls, fingerprints, metadata, callers)
}
