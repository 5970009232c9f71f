package ledgerclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// MaxBatchItems is the most items ledgerd takes in one batch call by
// default; DoBatch splits longer lists into calls of this size.
const MaxBatchItems = 1000

// ErrInProgress is the error of a DoBatch key that another worker holds:
// DoBatch does not wait for it; call DoBatch again for such keys later.
var ErrInProgress = errors.New("ledgerd: in progress: another worker holds the key")

// ReserveBatch reserves many keys of one namespace in one call: one
// result per item, in order, each Reserve's answer or an ItemError (see
// ItemErr). It fails as a whole only for what all items share (namespace,
// owner, lease TTL, the number of items). It retries while the server is
// unavailable, until ctx ends.
func (c *Client) ReserveBatch(ctx context.Context, req *ledgerv1.ReserveBatchRequest) (*ledgerv1.ReserveBatchResponse, error) {
	response, err := call(ctx, c.policy, "reserve batch", c.ledger.ReserveBatch, req)
	return response, prefixed(err)
}

// CompleteBatch completes many keys of one namespace in one call: one
// result per item, in order, each Complete's answer or an ItemError.
func (c *Client) CompleteBatch(ctx context.Context, req *ledgerv1.CompleteBatchRequest) (*ledgerv1.CompleteBatchResponse, error) {
	response, err := call(ctx, c.policy, "complete batch", c.ledger.CompleteBatch, req)
	return response, prefixed(err)
}

// LookupBatch returns the entries of many keys of one namespace in one
// call: one result per key, in order, an Entry or an ItemError (NOT_FOUND
// for a key the ledger does not hold).
func (c *Client) LookupBatch(ctx context.Context, req *ledgerv1.LookupBatchRequest) (*ledgerv1.LookupBatchResponse, error) {
	response, err := call(ctx, c.policy, "lookup batch", c.ledger.LookupBatch, req)
	return response, prefixed(err)
}

// ItemErr turns a batch item's error into an *Error, as the singleton call
// would have returned it: it matches the sentinel of its reason
// (ErrLeaseLost, ErrNotFound, ...), and names the field of an
// INVALID_ARGUMENT. It returns nil for nil.
func ItemErr(e *ledgerv1.ItemError) error {
	if e == nil {
		return nil
	}
	st := status.New(codes.Code(e.GetCode()), e.GetMessage())
	metadata := e.GetMetadata()
	if e.GetField() != "" {
		metadata = map[string]string{"field": e.GetField()}
		for k, v := range e.GetMetadata() {
			metadata[k] = v
		}
	}
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: e.GetReason(), Domain: errorDomain, Metadata: metadata}); err == nil {
		st = withInfo
	}
	return toError(st.Err())
}

// BatchResult is the outcome of one key of DoBatch.
type BatchResult struct {
	Key string
	// Result is set when Err is nil: the work's result (recorded now), or
	// the one recorded earlier (Replayed).
	Result Result
	// Err says why the key has no result: ErrInProgress (another worker
	// holds it), a *FailedError (it failed permanently), the work's error,
	// or the *Error of the key's Reserve or Complete (ErrLeaseLost,
	// ErrQuotaExceeded, ErrInvalidArgument, ...).
	Err error
}

// DoBatch is Do for many keys of one namespace at once, with one work call
// for all the keys this worker acquires. It reserves the keys with
// ReserveBatch (in calls of MaxBatchItems), runs work once with the
// acquired keys (in the order given) while heartbeating each of their
// leases, records the results work returns (one per key, in the same
// order) with CompleteBatch, and returns one BatchResult per key, in the
// order of keys:
//
//   - a completed key is replayed (Result.Replayed), and not given to work;
//   - a key another worker holds gets ErrInProgress at once: DoBatch does
//     not wait (call it again for those keys, or use Do);
//   - a key that failed permanently gets a *FailedError.
//
// When work returns an error, every acquired key records a failure,
// retryable unless the error is marked with Permanent, and gets the work's
// error. If a lease of the batch cannot be kept (lost, or no heartbeat
// acknowledged in time), the work's context is canceled with that cause;
// results the work still returns are offered to CompleteBatch, which
// records those of the keys whose leases nobody took over. If ctx ends
// while work runs, the leases still held are released.
//
// The options are Do's: the owner, lease TTL, heartbeat interval, and the
// metadata and fingerprint, which apply to every key. DoBatch fails as a
// whole only for what all keys share (a bad namespace or option), for a
// nil work, or with ctx's error before any work ran.
func (c *Client) DoBatch(ctx context.Context, namespace string, keys []string, work func(ctx context.Context, keys []string) ([][]byte, error), opts ...DoOption) ([]BatchResult, error) {
	if work == nil {
		return nil, errors.New("ledgerclient: do batch: work is nil")
	}
	o := doOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.owner == "" {
		o.owner = defaultOwner()
	}
	results := make([]BatchResult, 0, len(keys))
	for start := 0; start < len(keys); start += MaxBatchItems {
		chunk, err := c.doBatch(ctx, namespace, keys[start:min(start+MaxBatchItems, len(keys))], work, o)
		if err != nil {
			return nil, fmt.Errorf("ledgerclient: do batch %s: %w", namespace, err)
		}
		results = append(results, chunk...)
	}
	return results, nil
}

func (c *Client) doBatch(ctx context.Context, namespace string, keys []string, work func(context.Context, []string) ([][]byte, error), o doOptions) ([]BatchResult, error) {
	req := &ledgerv1.ReserveBatchRequest{Namespace: namespace, Owner: o.owner, Items: make([]*ledgerv1.ReserveBatchItem, len(keys))}
	if o.leaseTTL != 0 {
		req.LeaseTtl = durationpb.New(o.leaseTTL)
	}
	for i, key := range keys {
		req.Items[i] = &ledgerv1.ReserveBatchItem{Key: key, Fingerprint: o.fingerprint, Metadata: o.metadata}
	}
	reserved, err := call(ctx, c.policy, "reserve batch", c.ledger.ReserveBatch, req)
	if err != nil {
		return nil, err
	}
	results := make([]BatchResult, len(keys))
	var held []*leaseState
	var heldAt []int // held[j] is keys[heldAt[j]]
	for i, r := range reserved.GetResults() {
		results[i].Key = keys[i]
		answer := r.GetReserved()
		if itemErr := r.GetError(); itemErr != nil {
			if itemErr.GetReason() != ledgerv1.ErrorReason_RESPONSE_TOO_LARGE.String() {
				results[i].Err = ItemErr(itemErr)
				continue
			}
			// No room in the batch's answer: ask for this key alone (the
			// same owner gets the same lease back if one was granted).
			single := &ledgerv1.ReserveRequest{Namespace: namespace, Key: keys[i], Owner: o.owner, LeaseTtl: req.LeaseTtl,
				Fingerprint: o.fingerprint, Metadata: o.metadata}
			if answer, err = call(ctx, c.policy, "reserve", c.ledger.Reserve, single); err != nil {
				results[i].Err = err
				continue
			}
		}
		switch outcome := answer.GetOutcome().(type) {
		case *ledgerv1.ReserveResponse_Acquired:
			held = append(held, newLeaseState(namespace, keys[i], o.owner, outcome.Acquired))
			heldAt = append(heldAt, i)
		case *ledgerv1.ReserveResponse_Completed:
			results[i].Result = Result{
				Value:        outcome.Completed.GetResult(),
				FencingToken: outcome.Completed.GetFencingToken(),
				Replayed:     true,
				CompletedAt:  outcome.Completed.GetCompletedAt().AsTime(),
			}
		case *ledgerv1.ReserveResponse_Failed:
			failed := outcome.Failed
			results[i].Err = &FailedError{
				Namespace: namespace, Key: keys[i], Code: failed.GetError().GetCode(), Message: failed.GetError().GetMessage(),
				FencingToken: failed.GetFencingToken(), Attempts: int(failed.GetAttempts()), FailedAt: failed.GetFailedAt().AsTime(),
			}
		case *ledgerv1.ReserveResponse_InProgress:
			results[i].Err = fmt.Errorf("%w (%s)", ErrInProgress, outcome.InProgress.GetOwner())
		default:
			results[i].Err = fmt.Errorf("reserve returned an outcome this client does not know (%T)", outcome)
		}
	}
	if len(held) == 0 {
		return results, nil
	}
	outcomes := c.runBatch(ctx, namespace, held, work, o)
	for j, i := range heldAt {
		results[i].Result, results[i].Err = outcomes[j].Result, outcomes[j].Err
	}
	return results, nil
}

// runBatch runs work for the held leases, with a heartbeater each, and
// records what it returns.
func (c *Client) runBatch(ctx context.Context, namespace string, held []*leaseState, work func(context.Context, []string) ([][]byte, error), o doOptions) []BatchResult {
	workCtx, endWork := context.WithCancelCause(ctx)
	defer endWork(nil)
	heartbeats := make([]*heartbeater, len(held))
	keys := make([]string, len(held))
	for j, state := range held {
		interval := o.heartbeatInterval
		if interval <= 0 {
			interval = max(state.lease.TTL/3, 10*time.Millisecond)
		}
		heartbeats[j] = c.startHeartbeats(workCtx, endWork, state, interval)
		keys[j] = state.lease.Key
	}
	stopAll := func() error {
		var first error
		for _, h := range heartbeats {
			if err := h.stop(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	defer func() { _ = stopAll() }() // also when work panics; the error is read below
	values, workErr := work(workCtx, keys)
	if workErr == nil && len(values) != len(keys) {
		workErr = fmt.Errorf("work returned %d results for %d keys", len(values), len(keys))
	}
	heartbeatErr := stopAll()

	out := make([]BatchResult, len(held))
	switch {
	case workErr == nil:
		c.completeBatch(ctx, namespace, held, values, out)
	case heartbeatErr != nil || ctx.Err() != nil:
		cause := heartbeatErr
		if cause == nil {
			cause = contextError(ctx)
		}
		each(held, func(j int, state *leaseState) {
			out[j].Err = errors.Join(fmt.Errorf("the batch's work stopped: %w (the lease was released)", cause), c.release(ctx, state))
		})
	default:
		var permanent *PermanentError
		retryable := !errors.As(workErr, &permanent)
		each(held, func(j int, state *leaseState) {
			out[j].Err = errors.Join(fmt.Errorf("work failed (token %d): %w", state.lease.FencingToken, workErr),
				c.fail(ctx, state, errorMessage(workErr), retryable))
		})
	}
	for j, state := range held {
		out[j].Key = state.lease.Key
	}
	return out
}

// completeBatch records the work's results with CompleteBatch. A result
// the ledger refuses as invalid is recorded as a retryable failure that
// says why, as Do does.
func (c *Client) completeBatch(ctx context.Context, namespace string, held []*leaseState, values [][]byte, out []BatchResult) {
	ctx, cancel := afterward(ctx)
	defer cancel()
	req := &ledgerv1.CompleteBatchRequest{Namespace: namespace, Items: make([]*ledgerv1.CompleteBatchItem, len(held))}
	for j, state := range held {
		req.Items[j] = &ledgerv1.CompleteBatchItem{Key: state.lease.Key, FencingToken: state.lease.FencingToken, Result: values[j]}
	}
	completed, err := call(ctx, c.policy, "complete batch", c.ledger.CompleteBatch, req)
	if err != nil {
		for j := range out {
			out[j].Err = err
		}
		return
	}
	var refused []int
	for j, r := range completed.GetResults() {
		if itemErr := r.GetError(); itemErr != nil {
			out[j].Err = ItemErr(itemErr)
			if errors.Is(out[j].Err, ErrInvalidArgument) {
				refused = append(refused, j)
			}
			continue
		}
		lease := held[j].lease
		out[j].Result = Result{Value: values[j], FencingToken: lease.FencingToken, Attempt: lease.Attempt,
			CompletedAt: r.GetCompleted().GetCompletedAt().AsTime()}
	}
	for _, j := range refused {
		out[j].Err = errors.Join(out[j].Err, c.fail(ctx, held[j], errorMessage(out[j].Err), true))
	}
}

// each runs f for every lease, a few at a time.
func each(held []*leaseState, f func(j int, state *leaseState)) {
	const parallel = 16
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallel)
	for j, state := range held {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			f(j, state)
		})
	}
	wg.Wait()
}
