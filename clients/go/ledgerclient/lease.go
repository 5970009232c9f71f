package ledgerclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// Lease is the grant under which Do runs the work. The work reads it with
// LeaseFromContext.
type Lease struct {
	// Namespace and Key name the key being worked on.
	Namespace string
	Key       string
	// Owner is the owner that holds the lease (see WithOwner).
	Owner string
	// FencingToken identifies this grant; it strictly increases every time a
	// lease on the key is granted. Pass it to downstream systems with every
	// write, so that they can refuse writes from a worker that was taken over
	// (one with an older token).
	FencingToken int64
	// Attempt counts the grants of the key: 1 for the first, one more for
	// every takeover.
	Attempt int
	// Takeover is true when the key had been held before and this grant took
	// it over (the earlier worker failed, gave up, or its lease expired).
	Takeover bool
	// PreviousOwner is the owner before a takeover; empty otherwise.
	PreviousOwner string
	// Checkpoint is the last checkpoint an earlier holder stored (see
	// SetCheckpoint), so that the work can resume instead of starting over.
	// It is empty if none was stored. Treat it as read-only.
	Checkpoint []byte
	// TTL is the granted lease duration; Do heartbeats well within it.
	TTL time.Duration
	// Unguarded is true when the work runs without a lease because the
	// ledger could not answer and Do falls back to FailOpen: FencingToken is
	// 0, nothing fences this run, and another worker may run the same work.
	Unguarded bool
}

type leaseKey struct{}

// LeaseFromContext returns the lease that ctx carries, and true, when ctx is
// (or derives from) the context that Do passes to the work. It returns false
// for any other context.
func LeaseFromContext(ctx context.Context) (Lease, bool) {
	state, ok := ctx.Value(leaseKey{}).(*leaseState)
	if !ok {
		return Lease{}, false
	}
	return state.lease, true
}

// SetCheckpoint stages checkpoint (a cursor, an offset, a phase name: bytes
// the work chooses) to be stored with the lease's next heartbeat. If this
// worker then fails, gives up or dies, the worker that takes the key over
// finds the last stored checkpoint in its Lease and can resume from it. Do
// also stores a staged checkpoint before it records a retryable failure or
// releases the lease. An empty or nil checkpoint clears the stored one.
//
// The checkpoint is copied. Its size is limited by the server (64 KiB
// unless configured); a heartbeat that carries a larger one fails with
// ErrInvalidArgument, which ends the work (see Do). SetCheckpoint fails with
// ErrNoLease if ctx does not come from Do's work function.
func SetCheckpoint(ctx context.Context, checkpoint []byte) error {
	state, ok := ctx.Value(leaseKey{}).(*leaseState)
	if !ok {
		return ErrNoLease
	}
	state.stage(checkpoint)
	return nil
}

// leaseState is what the work's context carries: the lease, and the
// checkpoint staged for the next heartbeat.
type leaseState struct {
	lease Lease

	mu         sync.Mutex
	checkpoint []byte // staged; never nil while staged > stored
	staged     uint64 // counts SetCheckpoint calls
	stored     uint64 // the value of staged whose checkpoint the ledger holds
}

func (s *leaseState) stage(checkpoint []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkpoint = bytes.Clone(checkpoint)
	if s.checkpoint == nil {
		s.checkpoint = []byte{} // set and empty: the heartbeat clears the stored one
	}
	s.staged++
}

// pending returns the staged checkpoint that the ledger does not hold yet,
// and its version for markStored; nil if there is none.
func (s *leaseState) pending() (checkpoint []byte, version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staged == s.stored {
		return nil, 0
	}
	return s.checkpoint, s.staged
}

// markStored records that the checkpoint of version is stored. A checkpoint
// staged meanwhile stays pending.
func (s *leaseState) markStored(version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stored = max(s.stored, version)
}

// heartbeater keeps a lease alive in the background while the work runs.
type heartbeater struct {
	client   *Client
	state    *leaseState
	interval time.Duration
	// endWork cancels the work's context when the lease cannot be kept.
	endWork context.CancelCauseFunc

	cancel context.CancelFunc
	done   chan struct{}
	err    error // why the heartbeats ended early; read only after done is closed

	// validUntil is when the lease runs out unless a heartbeat is
	// acknowledged first: the sending time of the last acknowledged
	// heartbeat (or of the grant), plus the TTL. Only run touches it.
	validUntil time.Time
}

// errLeaseUnconfirmed ends the work when no heartbeat could be acknowledged
// before the lease ran out (ledgerd unreachable, say): another worker may
// hold the key by now. It matches ErrLeaseLost; Do still tries to record a
// result the work returns, since the ledger accepts it if nobody took over.
var errLeaseUnconfirmed = fmt.Errorf("%w: no heartbeat was acknowledged before the lease ran out (ledgerd unreachable?)", ErrLeaseLost)

// startHeartbeats starts heartbeating state's lease every interval until
// stop is called or workCtx ends.
func (c *Client) startHeartbeats(workCtx context.Context, endWork context.CancelCauseFunc, state *leaseState, interval time.Duration) *heartbeater {
	ctx, cancel := context.WithCancel(workCtx)
	h := &heartbeater{
		client:   c,
		state:    state,
		interval: interval,
		endWork:  endWork,
		cancel:   cancel,
		done:     make(chan struct{}),
		// The grant was made a moment ago; counting the TTL from now is off
		// by one round trip at most, and the margin below covers it.
		validUntil: time.Now().Add(state.lease.TTL),
	}
	go h.run(ctx)
	return h
}

func (h *heartbeater) run(ctx context.Context) {
	defer close(h.done)
	ticker := time.NewTicker(h.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		// Each heartbeat, retries included, must be acknowledged before the
		// lease runs out (less a margin for the answer's trip); past that,
		// another worker may hold the key and the work must stop.
		// Even past that point one heartbeat is still tried, briefly: the
		// ledger extends an expired lease if nobody took over (fencing beats
		// time), and tells LEASE_LOST otherwise.
		margin := min(h.state.lease.TTL/10, time.Second)
		deadline := h.validUntil.Add(-margin)
		if floor := time.Now().Add(min(h.interval, time.Second)); deadline.Before(floor) {
			deadline = floor
		}
		callCtx, cancelCall := context.WithDeadline(ctx, deadline)
		sentAt := time.Now()
		err := h.client.heartbeat(callCtx, h.state)
		cancelCall()
		if err == nil {
			h.validUntil = sentAt.Add(h.state.lease.TTL)
			continue
		}
		if ctx.Err() != nil {
			return // stopped during the call: not a failure
		}
		if callCtx.Err() != nil && !answered(err) {
			err = errLeaseUnconfirmed
		}
		// The heartbeat was refused (LEASE_LOST, or a bad checkpoint), or
		// could not be made in time: the lease cannot be kept, so the work
		// must stop.
		h.err = err
		h.endWork(err)
		return
	}
}

// stop ends the heartbeats and waits for the goroutine to exit. It returns
// the error that ended them early, if one did. It may be called again.
func (h *heartbeater) stop() error {
	h.cancel()
	<-h.done
	return h.err
}

// heartbeat extends state's lease, carrying the staged checkpoint if there
// is one.
func (c *Client) heartbeat(ctx context.Context, state *leaseState) error {
	checkpoint, version := state.pending()
	_, err := call(ctx, c.policy, "heartbeat", c.ledger.Heartbeat, &ledgerv1.HeartbeatRequest{
		Namespace:    state.lease.Namespace,
		Key:          state.lease.Key,
		FencingToken: state.lease.FencingToken,
		LeaseTtl:     durationpb.New(state.lease.TTL),
		Checkpoint:   checkpoint, // nil (unset) keeps the stored checkpoint
	})
	if err != nil {
		return err
	}
	if checkpoint != nil {
		state.markStored(version)
	}
	return nil
}

// storeCheckpoint sends a staged checkpoint that no heartbeat has carried
// yet, so that it is not lost when the lease is given up. Fail and Release
// do not carry checkpoints.
func (c *Client) storeCheckpoint(ctx context.Context, state *leaseState) error {
	if checkpoint, _ := state.pending(); checkpoint == nil {
		return nil
	}
	return c.heartbeat(ctx, state)
}

// answered reports whether err is the ledger's own answer (a refusal), as
// opposed to the ledger not answering in time.
func answered(err error) bool {
	var ledgerErr *Error
	if !errors.As(err, &ledgerErr) {
		return false
	}
	return !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrDeadlineExceeded) && !errors.Is(err, ErrCanceled)
}
