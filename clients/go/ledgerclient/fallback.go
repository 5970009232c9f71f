package ledgerclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Fallback says what Do does when the ledger cannot answer: the circuit
// breaker is open, or the Reserve failed as unavailable after the retries
// allowed (WithMaxAttempts, the retry budget). It never applies when the
// ledger answered: a key another worker holds is waited for, a failed key,
// a refusal, a fingerprint mismatch or a quota behave the same under both.
type Fallback int

const (
	// FailClosed (the default) does not run the work: Do returns the
	// unavailable error (a *CircuitOpenError, or an *Error matching
	// ErrUnavailable or ErrDeadlineExceeded), which the caller can branch
	// on with errors.Is(err, ErrUnavailable).
	FailClosed Fallback = iota
	// FailOpen runs the work unguarded, for steps whose side effects are
	// already idempotent downstream: no lease, fencing token 0, and
	// Lease.Unguarded and Result.Unguarded set. The OnRun hook is called
	// first. If the work returns a result, it is queued in memory and
	// recorded in the ledger once it is back (Reserve, waiting for a holder
	// as Do does, then Complete), unless the key was completed by someone
	// else (their result is kept, ours discarded) or failed permanently.
	//
	// What it gives up: exactly-once. Two workers may both run the work
	// while the ledger is down, and a process that dies with a non-empty
	// queue loses those records: the ledger never learns of the runs (Flush
	// before exiting; Close flushes for a bounded time). When the queue is
	// full (WithFailOpenQueue), Do fails closed until it drains.
	FailOpen
)

// String returns "fail_closed" or "fail_open".
func (f Fallback) String() string {
	if f == FailOpen {
		return "fail_open"
	}
	return "fail_closed"
}

// FailOpenOutcome is how the recording of a fail-open result ended.
type FailOpenOutcome string

// The outcomes of recording a fail-open result.
const (
	// FailOpenRecorded: the ledger now holds our result.
	FailOpenRecorded FailOpenOutcome = "recorded"
	// FailOpenDiscardedCompleted: another worker completed the key first;
	// its result is kept, ours discarded.
	FailOpenDiscardedCompleted FailOpenOutcome = "discarded_completed"
	// FailOpenDiscardedFailed: the key failed permanently; ours is
	// discarded.
	FailOpenDiscardedFailed FailOpenOutcome = "discarded_failed"
	// FailOpenDiscardedRefused: the ledger refused the result for good (too
	// large for the namespace, a fingerprint mismatch, no permission); it
	// is discarded and the key left as it was.
	FailOpenDiscardedRefused FailOpenOutcome = "discarded_refused"
)

// FailOpenHooks reports fail-open runs (WithFailOpenHooks). Hooks must not
// block for long: OnRun runs on Do's goroutine, OnRecorded on the
// recorder's.
type FailOpenHooks struct {
	// OnRun is called before the work runs unguarded, with the error that
	// made the ledger unusable.
	OnRun func(namespace, key string, cause error)
	// OnRecorded is called once the fail-open result is settled, with
	// err saying why it was discarded when the outcome is not recorded.
	OnRecorded func(namespace, key string, outcome FailOpenOutcome, err error)
}

// defaultFailOpenQueue is the default bound of the fail-open queue.
const defaultFailOpenQueue = 10_000

// closeFlushTimeout bounds how long Close waits for the fail-open queue.
const closeFlushTimeout = 10 * time.Second

// WithFallback sets the Client's default Fallback for Do; WithDoFallback
// overrides it for one call. Defaults to FailClosed.
func WithFallback(fallback Fallback) Option {
	return func(o *options) { o.fallback = fallback }
}

// WithFailOpenHooks sets the hooks that report fail-open runs and their
// recording. Defaults to none (Stats counts them either way).
func WithFailOpenHooks(hooks FailOpenHooks) Option {
	return func(o *options) { o.failOpenHooks = hooks }
}

// WithFailOpenQueue bounds how many fail-open results may wait to be
// recorded; when it is full, FailOpen behaves as FailClosed. Defaults to
// 10,000; New fails for less than 1.
func WithFailOpenQueue(size int) Option {
	return func(o *options) { o.failOpenQueue = size }
}

// WithDoFallback sets the Fallback of one Do call, overriding the Client's
// (WithFallback).
func WithDoFallback(fallback Fallback) DoOption {
	return func(o *doOptions) { o.fallback = &fallback }
}

// unusable reports whether err (from Reserve, ctx still live) means the
// ledger could not answer: the breaker refused, or the call gave up on an
// unavailable ledgerd.
func unusable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrDeadlineExceeded)
}

// pendingRecord is a fail-open result waiting to be recorded.
type pendingRecord struct {
	namespace, key string
	value          []byte
	opts           doOptions
}

// failOpenQueue holds the fail-open results until a background recorder
// gets them into the ledger.
type failOpenQueue struct {
	client *Client
	hooks  FailOpenHooks
	size   int

	runs, recorded, discarded atomicCounter

	mu      sync.Mutex
	items   []pendingRecord
	pending int           // admitted and not settled: running work, queued, being recorded
	running bool          // the recorder goroutine is running
	drained chan struct{} // closed and replaced when pending drops to 0
	stop    context.CancelFunc
	ctx     context.Context //nolint:containedctx // the recorder's lifetime: canceled by Close
	done    chan struct{}   // closed when the recorder exits; nil before it starts
}

func newFailOpenQueue(c *Client, hooks FailOpenHooks, size int) *failOpenQueue {
	ctx, stop := context.WithCancel(context.Background())
	return &failOpenQueue{client: c, hooks: hooks, size: size, drained: make(chan struct{}), ctx: ctx, stop: stop}
}

// admit reserves a place for a fail-open run, and reports whether there
// was one.
func (q *failOpenQueue) admit() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending >= q.size {
		return false
	}
	q.pending++
	return true
}

// settle gives back a place (the work failed, or its result was settled).
func (q *failOpenQueue) settle() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending--
	if q.pending == 0 {
		close(q.drained)
		q.drained = make(chan struct{})
	}
}

// push queues an admitted run's result, starting the recorder if needed.
func (q *failOpenQueue) push(r pendingRecord) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append(q.items, r)
	if !q.running && q.ctx.Err() == nil {
		q.running = true
		q.done = make(chan struct{})
		go q.record()
	}
}

// record is the recorder: it records the queued results one at a time,
// retrying each while the ledger cannot take it, until the queue is empty
// or Close stops it.
func (q *failOpenQueue) record() {
	defer close(q.done)
	for {
		q.mu.Lock()
		if len(q.items) == 0 || q.ctx.Err() != nil {
			q.running = false
			q.mu.Unlock()
			return
		}
		r := q.items[0]
		q.mu.Unlock()

		outcome, err := q.recordOne(r)
		if outcome == "" {
			return // stopped by Close
		}
		q.mu.Lock()
		q.items = q.items[1:]
		q.mu.Unlock()
		if outcome == FailOpenRecorded {
			q.recorded.add()
		} else {
			q.discarded.add()
		}
		if q.hooks.OnRecorded != nil {
			q.hooks.OnRecorded(r.namespace, r.key, outcome, err)
		}
		q.settle()
	}
}

// recordOne gets one result into the ledger, as Do would (Reserve,
// waiting for a holder, then Complete), failing closed, and retries while
// the ledger cannot answer. It returns "" when Close stopped it.
func (q *failOpenQueue) recordOne(r pendingRecord) (FailOpenOutcome, error) {
	backoff := retryInitialBackoff
	closed := FailClosed
	r.opts.fallback = &closed
	for {
		result, err := q.client.do(q.ctx, r.namespace, r.key, func(context.Context) ([]byte, error) {
			return r.value, nil
		}, r.opts)
		switch {
		case err == nil && result.Replayed:
			return FailOpenDiscardedCompleted, nil
		case err == nil:
			return FailOpenRecorded, nil
		case q.ctx.Err() != nil:
			return "", err
		case errors.Is(err, ErrFailed):
			return FailOpenDiscardedFailed, err
		case !unusable(err) && !errors.Is(err, ErrLeaseLost):
			return FailOpenDiscardedRefused, err
		}
		// The ledger is still away (or another worker took the key over
		// meanwhile): try again later, which the breaker paces.
		if sleep(q.ctx, jitter(backoff)) != nil {
			return "", err
		}
		backoff = min(2*backoff, retryMaxBackoff)
	}
}

// flush waits until no fail-open result is pending, or ctx ends.
func (q *failOpenQueue) flush(ctx context.Context) error {
	for {
		q.mu.Lock()
		pending, drained := q.pending, q.drained
		q.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-drained:
		case <-ctx.Done():
			return fmt.Errorf("ledgerclient: flush: %d fail-open result(s) not recorded yet: %w", q.pendingCount(), contextError(ctx))
		}
	}
}

func (q *failOpenQueue) pendingCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending
}

// close stops the recorder and waits for it to exit.
func (q *failOpenQueue) close() {
	q.stop()
	q.mu.Lock()
	done := q.done
	q.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Flush waits until every fail-open result has been recorded in the ledger
// (or discarded), or ctx ends; then it fails with an error that says how
// many are left. Call it before a process exits: results still queued when
// it dies are lost.
func (c *Client) Flush(ctx context.Context) error {
	return c.failOpen.flush(ctx)
}

// runUnguarded is Do's fail-open path: cause made the ledger unusable.
func (c *Client) runUnguarded(ctx context.Context, namespace, key string, cause error, work func(context.Context) ([]byte, error), o doOptions) (Result, error) {
	q := c.failOpen
	q.runs.add()
	if q.hooks.OnRun != nil {
		q.hooks.OnRun(namespace, key, cause)
	}
	state := &leaseState{lease: Lease{Namespace: namespace, Key: key, Owner: o.owner, Unguarded: true}}
	value, err := c.runUnguardedWork(context.WithValue(ctx, leaseKey{}, state), work)
	if err != nil {
		q.settle()
		return Result{}, fmt.Errorf("work failed (unguarded, the ledger unavailable: %w): %w", cause, err)
	}
	q.push(pendingRecord{namespace: namespace, key: key, value: value, opts: o})
	return Result{Value: value, Unguarded: true}, nil
}

// runUnguardedWork calls work, giving back the queue's place if it panics
// or exits its goroutine.
func (c *Client) runUnguardedWork(ctx context.Context, work func(context.Context) ([]byte, error)) (value []byte, err error) {
	returned := false
	defer func() {
		if !returned {
			c.failOpen.settle()
		}
	}()
	value, err = work(ctx)
	returned = true
	return value, err
}
