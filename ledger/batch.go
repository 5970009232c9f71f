package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ReserveResult is the outcome of one item of ReserveBatch: a Reservation,
// or the error the singleton Reserve would have returned.
type ReserveResult struct {
	Reservation Reservation
	Err         error
}

// CompleteResult is the outcome of one item of CompleteBatch.
type CompleteResult struct {
	Completion Completion
	Err        error
}

// LookupResult is the outcome of one key of LookupBatch: its entry, or an
// error (ErrNotFound for a key the ledger does not hold).
type LookupResult struct {
	Entry Entry
	Err   error
}

// ReserveBatchRequest reserves many keys of one namespace for one owner.
type ReserveBatchRequest struct {
	Namespace string
	// Owner and LeaseTTL are those of every item; see ReserveRequest.
	Owner    string
	LeaseTTL time.Duration
	Items    []ReserveBatchItem
}

// ReserveBatchItem is one key of a ReserveBatch; see ReserveRequest.
type ReserveBatchItem struct {
	Key         string
	Fingerprint []byte
	Metadata    map[string]string
}

// ReserveBatch reserves many keys, with per-item outcomes in request order
// and the semantics of Reserve for each (fencing, fingerprints, audit
// events); an item never waits. Fresh keys and replays of all items cost
// one statement and one commit; each takeover or same-owner extension
// costs one more statement. A key may appear once. An item that breaks a
// rule fails alone, with a *ValidationError whose field is
// "items[i].<field>". The whole call fails with a *ValidationError for a
// bad namespace, owner or lease TTL, no items, or more than
// Limits.MaxBatchItems, and with ErrUnavailable. In a namespace with a
// held-leases quota, the items are reserved one by one, as Reserve does;
// in one with a stored-bytes quota, they are too when the batch as a whole
// would go over it.
func (s *Store) ReserveBatch(ctx context.Context, req ReserveBatchRequest) ([]ReserveResult, error) {
	results, err := s.reserveBatch(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("reserve batch %s: %w", req.Namespace, err)
	}
	return results, nil
}

func (s *Store) reserveBatch(ctx context.Context, batch ReserveBatchRequest) ([]ReserveResult, error) {
	if err := checkNamespace(batch.Namespace); err != nil {
		return nil, err
	}
	if err := checkText("owner", batch.Owner, true, s.limits.MaxOwnerBytes); err != nil {
		return nil, err
	}
	if err := s.checkBatchSize("items", len(batch.Items)); err != nil {
		return nil, err
	}
	release, err := s.batchSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	ns, stored, err := s.namespace(ctx, batch.Namespace)
	if err != nil {
		return nil, err
	}
	ttl, err := s.limits.leaseTTL(batch.LeaseTTL, ns)
	if err != nil {
		return nil, err
	}
	reqs := make([]ReserveRequest, len(batch.Items))
	results := make([]ReserveResult, len(batch.Items))
	var valid []int
	seen := make(map[string]int, len(batch.Items))
	for i, item := range batch.Items {
		reqs[i] = ReserveRequest{Namespace: batch.Namespace, Key: item.Key, Owner: batch.Owner, LeaseTTL: batch.LeaseTTL,
			Fingerprint: item.Fingerprint, Metadata: item.Metadata}
		err := itemError(i, s.checkReserve(reqs[i]))
		if err == nil {
			err = checkDuplicate(itemKey, i, batch.Namespace, item.Key, seen)
		}
		if err != nil {
			results[i].Err = fmt.Errorf("reserve %s/%s: %w", batch.Namespace, item.Key, err)
			continue
		}
		valid = append(valid, i)
	}
	if len(valid) == 0 {
		return results, nil
	}
	if !stored {
		if ns, ttl, err = s.createForReserve(ctx, batch.Namespace, batch.LeaseTTL); err != nil {
			return nil, err
		}
	}
	if ns.MaxHeldLeases > 0 {
		for _, i := range valid {
			results[i].Reservation, results[i].Err = s.Reserve(ctx, reqs[i])
		}
		return results, nil
	}
	items := make([]reserveItem, len(valid))
	for j, i := range valid {
		items[j] = newReserveItem(ctx, reqs[i], ttl)
	}
	rows, err := insertOrReadMany(ctx, s.pool, items)
	if errors.Is(err, ErrQuotaExceeded) {
		// The new entries would take the namespace over its stored-bytes
		// quota, and the statement changed nothing: each item alone, so that
		// those that fit are granted and only the others refused.
		for _, i := range valid {
			results[i].Reservation, results[i].Err = s.Reserve(ctx, reqs[i])
		}
		return results, nil
	}
	if err != nil {
		return nil, err
	}
	for j, i := range valid {
		req, r := reqs[i], &results[i]
		if rows[j] == nil {
			r.Err = errRaced
		} else {
			r.Reservation, r.Err = s.decide(ctx, s.pool, req, ttl, ns, rows[j])
		}
		if errors.Is(r.Err, errRaced) {
			// A concurrent change got in between: this item alone, as Reserve.
			r.Reservation, r.Err = retryRaces(ctx, func() (Reservation, error) { return s.reserveOnce(ctx, s.pool, req, ttl, ns) })
		}
		if r.Err != nil {
			r.Err = fmt.Errorf("reserve %s/%s: %w", req.Namespace, req.Key, r.Err)
		}
	}
	return results, nil
}

// CompleteBatchItem is one key of a CompleteBatch; see CompleteRequest.
type CompleteBatchItem struct {
	Key          string
	FencingToken int64
	Result       []byte
}

// CompleteBatch completes many keys of a namespace, with per-item outcomes
// in request order and the semantics of Complete for each. All items cost
// one statement and one commit, unless some raced with a concurrent change
// (those are run again alone). An item that breaks a rule, or repeats a
// key, fails alone. The whole call fails with a *ValidationError for a bad
// namespace, no items or too many, and with ErrUnavailable. In a namespace
// with a stored-bytes quota, the items are completed one by one, as
// Complete does.
func (s *Store) CompleteBatch(ctx context.Context, namespace string, completions []CompleteBatchItem) ([]CompleteResult, error) {
	err := checkNamespace(namespace)
	if err == nil {
		err = s.checkBatchSize("items", len(completions))
	}
	if err != nil {
		return nil, fmt.Errorf("complete batch %s: %w", namespace, err)
	}
	release, err := s.batchSlot(ctx)
	if err != nil {
		return nil, fmt.Errorf("complete batch %s: %w", namespace, err)
	}
	defer release()
	reqs := make([]CompleteRequest, len(completions))
	for i, item := range completions {
		reqs[i] = CompleteRequest{Namespace: namespace, Key: item.Key, FencingToken: item.FencingToken, Result: item.Result}
	}
	results := make([]CompleteResult, len(reqs))
	var batch []int
	var items []completeItem
	seen := make(map[string]int, len(reqs))
	for i, req := range reqs {
		ns, err := s.checkBatchComplete(ctx, i, req, seen)
		switch {
		case err != nil:
			results[i].Err = fmt.Errorf("complete %s/%s token %d: %w", req.Namespace, req.Key, req.FencingToken, err)
		case ns.MaxStoredBytes > 0:
			results[i].Completion, results[i].Err = s.Complete(ctx, req)
		default:
			batch = append(batch, i)
			items = append(items, newCompleteItem(ctx, req, ns))
		}
	}
	if len(batch) == 0 {
		return results, nil
	}
	rows, err := completeMany(ctx, s.pool, items)
	if err != nil {
		return nil, fmt.Errorf("complete batch %s: %w", namespace, err)
	}
	for j, i := range batch {
		req := reqs[i]
		r := &results[i]
		row, already, err := s.judgeGuarded(ctx, s.pool, "complete", req.Namespace, req.Key, req.FencingToken, is(StateCompleted), rows[j])
		if errors.Is(err, errRaced) {
			r.Completion, r.Err = s.Complete(ctx, req)
			continue
		}
		if err != nil {
			r.Err = fmt.Errorf("complete %s/%s token %d: %w", req.Namespace, req.Key, req.FencingToken, err)
			continue
		}
		r.Completion = Completion{CompletedAt: derefTime(row.FinishedAt), AlreadyCompleted: already}
	}
	return results, nil
}

// checkBatchComplete checks item i of a CompleteBatch as Complete checks
// its request, and refuses a repeated key; it returns the namespace's
// settings.
func (s *Store) checkBatchComplete(ctx context.Context, i int, req CompleteRequest, seen map[string]int) (NamespaceSettings, error) {
	ns, err := s.checkComplete(ctx, req)
	if err != nil {
		return NamespaceSettings{}, itemError(i, err)
	}
	if err := checkDuplicate(itemKey, i, req.Namespace, req.Key, seen); err != nil {
		return NamespaceSettings{}, err
	}
	return ns, nil
}

// LookupBatch returns the entries of many keys of a namespace, in request
// order, with one statement (and a second one for keys without an entry,
// to report the purged ones). A key that breaks a rule or repeats fails
// alone; a key the ledger does not hold gets ErrNotFound.
func (s *Store) LookupBatch(ctx context.Context, namespace string, keys []string) ([]LookupResult, error) {
	if err := checkNamespace(namespace); err != nil {
		return nil, fmt.Errorf("lookup batch %s: %w", namespace, err)
	}
	if err := s.checkBatchSize("keys", len(keys)); err != nil {
		return nil, fmt.Errorf("lookup batch %s: %w", namespace, err)
	}
	release, err := s.batchSlot(ctx)
	if err != nil {
		return nil, fmt.Errorf("lookup batch %s: %w", namespace, err)
	}
	defer release()
	results := make([]LookupResult, len(keys))
	var valid []string
	var positions []int
	seen := make(map[string]int, len(keys))
	for i, key := range keys {
		err := checkKey(s.limits, namespace, key)
		var validation *ValidationError
		if errors.As(err, &validation) {
			err = invalid(lookupKey(i), "%s", validation.Reason)
		} else if err == nil {
			err = checkDuplicate(lookupKey, i, namespace, key, seen)
		}
		if err != nil {
			results[i].Err = fmt.Errorf("lookup %s/%s: %w", namespace, key, err)
			continue
		}
		valid = append(valid, key)
		positions = append(positions, i)
	}
	if len(valid) == 0 {
		return results, nil
	}
	if err := s.lookupRows(ctx, namespace, valid, positions, results); err != nil {
		return nil, fmt.Errorf("lookup batch %s: %w", namespace, err)
	}
	return results, nil
}

func (s *Store) lookupRows(ctx context.Context, namespace string, keys []string, positions []int, results []LookupResult) error {
	items := make([]lookupItem, len(keys))
	for i, key := range keys {
		items[i] = lookupItem{namespace: namespace, key: key}
	}
	found, err := lookupMany(ctx, s.pool, items)
	if err != nil {
		return err
	}
	var missing []string
	var missingAt []int
	for j, row := range found {
		if row != nil {
			results[positions[j]].Entry = row.toEntry()
		} else {
			missing = append(missing, keys[j])
			missingAt = append(missingAt, positions[j])
		}
	}
	if len(missing) == 0 {
		return nil
	}
	purged, err := purgedMany(ctx, s.pool, namespace, missing)
	if err != nil {
		return err
	}
	for j, p := range purged {
		if p != nil {
			results[missingAt[j]].Entry = p.entry(namespace, missing[j])
		} else {
			results[missingAt[j]].Err = fmt.Errorf("lookup %s/%s: %w", namespace, missing[j], ErrNotFound)
		}
	}
	return nil
}

// batchSlot waits for one of the Config.MaxConcurrentBatches slots, or for
// ctx to end; release frees the slot.
func (s *Store) batchSlot(ctx context.Context) (release func(), err error) {
	select {
	case s.batchSlots <- struct{}{}:
		return func() { <-s.batchSlots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// checkBatchSize refuses a batch of no items, or of more than
// Limits.MaxBatchItems; list names the request's field ("items", "keys").
func (s *Store) checkBatchSize(list string, n int) error {
	if n == 0 || n > s.limits.MaxBatchItems {
		return invalid(list, "must hold 1 to %d items, got %d", s.limits.MaxBatchItems, n)
	}
	return nil
}

// itemError names item i's field in a *ValidationError.
func itemError(i int, err error) error {
	var validation *ValidationError
	if errors.As(err, &validation) {
		return &ValidationError{Field: fmt.Sprintf("items[%d].%s", i, validation.Field), Reason: validation.Reason}
	}
	return err
}

// checkDuplicate refuses the second item of a batch with the same key;
// field names item i's key ("items[i].key", or LookupBatch's "keys[i]").
func checkDuplicate(field func(i int) string, i int, namespace, key string, seen map[string]int) error {
	id := namespace + "\x00" + key
	if first, dup := seen[id]; dup {
		return invalid(field(i), "repeats %s: a batch holds each key once", field(first))
	}
	seen[id] = i
	return nil
}

// itemKey names the key of item i of ReserveBatch or CompleteBatch.
func itemKey(i int) string { return fmt.Sprintf("items[%d].key", i) }

// lookupKey names key i of LookupBatch.
func lookupKey(i int) string { return fmt.Sprintf("keys[%d]", i) }
