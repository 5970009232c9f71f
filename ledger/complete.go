package ledger

import (
	"context"
	"fmt"
	"time"
)

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
// ErrResultConflict (a repeat with a different result), a *QuotaError or
// ErrUnavailable.
//
// It costs one statement (complete.sql), gathered with concurrent
// Completes' into one (complete_batch.sql) when coalescing is on, except in
// a namespace with a stored-bytes quota.
func (s *Store) Complete(ctx context.Context, req CompleteRequest) (Completion, error) {
	completion, err := s.complete(ctx, req)
	if err != nil {
		return Completion{}, fmt.Errorf("complete %s/%s token %d: %w", req.Namespace, req.Key, req.FencingToken, err)
	}
	return completion, nil
}

func (s *Store) complete(ctx context.Context, req CompleteRequest) (Completion, error) {
	ns, err := s.checkComplete(ctx, req)
	if err != nil {
		return Completion{}, err
	}
	row, already, err := s.storeResult(ctx, newCompleteItem(ctx, req, ns), ns)
	if err != nil {
		return Completion{}, err
	}
	return Completion{CompletedAt: derefTime(row.FinishedAt), AlreadyCompleted: already}, nil
}

// checkComplete checks a Complete's fields against the server's limits,
// then its result against its namespace's limit, and returns the
// namespace's settings. The server's ceiling comes first, so that an
// oversized result is refused before the namespace is read.
func (s *Store) checkComplete(ctx context.Context, req CompleteRequest) (NamespaceSettings, error) {
	if err := checkKey(s.limits, req.Namespace, req.Key); err != nil {
		return NamespaceSettings{}, err
	}
	if err := checkFencingToken(req.FencingToken); err != nil {
		return NamespaceSettings{}, err
	}
	if err := checkBytes("result", req.Result, s.limits.MaxResultBytes); err != nil {
		return NamespaceSettings{}, err
	}
	ns, _, err := s.namespace(ctx, req.Namespace)
	if err != nil {
		return NamespaceSettings{}, err
	}
	if err := checkBytes("result", req.Result, ns.MaxResultBytes); err != nil {
		return NamespaceSettings{}, err
	}
	return ns, nil
}

// storeResult runs the Complete statement and judges its row (see
// judgeGuarded): gathered with concurrent ones when coalescing is on, alone
// otherwise.
//
// In a namespace with a stored-bytes quota, the statement itself adds the
// entry's change of stored bytes to the namespace's usage and fails, having
// changed nothing, if that would take the usage over the quota (see
// complete.sql); it runs alone, not gathered, so that a refusal does not
// fail a batch of other callers' Completes.
func (s *Store) storeResult(ctx context.Context, item completeItem, ns NamespaceSettings) (guardRow, bool, error) {
	return s.guarded(ctx, s.pool, "complete", item.namespace, item.key, item.token, is(StateCompleted), func() (*guardRow, error) {
		if s.coalesce != nil && ns.MaxStoredBytes == 0 {
			return s.coalesce.completes.do(ctx, item)
		}
		return completeOne(ctx, s.pool, item)
	})
}

// completeItem is the statement of one Complete, as its SQL takes it.
type completeItem struct {
	namespace, key string
	token          int64
	result         []byte
	retentionMS    int64
	caller         string
}

// newCompleteItem is req's statement. A completed entry always has a
// result, maybe empty: an absent one is stored empty.
func newCompleteItem(ctx context.Context, req CompleteRequest, ns NamespaceSettings) completeItem {
	return completeItem{
		namespace: req.Namespace, key: req.Key, token: req.FencingToken, result: emptyIfNil(req.Result),
		retentionMS: ns.Retention.Milliseconds(), caller: callerFrom(ctx),
	}
}

func (it completeItem) id() string { return it.namespace + "\x00" + it.key }

// completeOne runs one Complete (complete.sql): the guard row, or nil when
// the key has no entry.
func completeOne(ctx context.Context, q querier, item completeItem) (*guardRow, error) {
	return queryOne[guardRow](ctx, q, query("complete"),
		item.namespace, item.key, item.token, item.result, item.retentionMS, item.caller)
}

// completeMany runs Complete for many distinct keys at once
// (complete_batch.sql, the twin of complete.sql) and returns each item's
// guard row, nil when the key has no entry.
func completeMany(ctx context.Context, q querier, items []completeItem) ([]*guardRow, error) {
	namespaces, keys, tokens := make([]string, len(items)), make([]string, len(items)), make([]int64, len(items))
	results, retentions, callers := make([][]byte, len(items)), make([]int64, len(items)), make([]string, len(items))
	for i, it := range items {
		namespaces[i], keys[i], tokens[i] = it.namespace, it.key, it.token
		results[i], retentions[i], callers[i] = it.result, it.retentionMS, it.caller
	}
	return queryNumbered[numberedGuardRow, guardRow](ctx, q, len(items), query("complete_batch"),
		namespaces, keys, tokens, results, retentions, callers)
}
