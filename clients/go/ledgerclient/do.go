package ledgerclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// Result is the outcome of a Do that recorded or replayed a result.
type Result struct {
	// Value is the work's result: returned by the work in this call, or
	// stored by an earlier one and replayed.
	Value []byte
	// FencingToken is the token of the grant under which Value was recorded.
	FencingToken int64
	// Attempt is the number of the grant that ran the work in this call (1
	// for the first grant of the key). It is zero when Replayed: the ledger
	// does not report it with a replay.
	Attempt int
	// Replayed is true when the key was already completed: Value is the
	// stored result and the work did not run.
	Replayed bool
	// CompletedAt is when the key was completed, by the database's clock.
	// It is zero when Unguarded.
	CompletedAt time.Time
	// Unguarded is true when the ledger could not answer and the work ran
	// without a lease under FailOpen: Value is the work's result, queued to
	// be recorded once the ledger is back (see FailOpen and Flush).
	Unguarded bool
}

// DoOption configures Do.
type DoOption func(*doOptions)

type doOptions struct {
	owner             string
	leaseTTL          time.Duration
	fingerprint       []byte
	metadata          map[string]string
	heartbeatInterval time.Duration
	fallback          *Fallback // nil: the Client's
}

// WithOwner names the worker in the ledger (and in its audit trail). It
// defaults to "<hostname>/<pid>/<random>", new for every Do call. Two Do
// calls with the same owner for the same key share one lease (Reserve by the
// holder returns the same fencing token), so give every concurrent worker
// its own owner.
func WithOwner(owner string) DoOption {
	return func(o *doOptions) { o.owner = owner }
}

// WithLeaseTTL sets how long the lease lasts without a heartbeat; every
// heartbeat extends it by ttl again. A worker that stops heartbeating (it
// crashed, or is paused) is taken over once it runs out. It defaults to the
// namespace's default (30s unless configured); the server refuses a ttl
// below its minimum (1s unless configured) or above the namespace's maximum
// with ErrInvalidArgument.
func WithLeaseTTL(ttl time.Duration) DoOption {
	return func(o *doOptions) { o.leaseTTL = ttl }
}

// WithFingerprint sets the fingerprint of the request payload, e.g. its
// SHA-256. The first Do of a key stores it; a later Do of the key with a
// different fingerprint fails with ErrFingerprintMismatch (same key,
// different request). It defaults to none, which matches only none.
func WithFingerprint(fingerprint []byte) DoOption {
	return func(o *doOptions) { o.fingerprint = fingerprint }
}

// WithMetadata sets free-form labels stored on the key's entry when the
// lease is granted, e.g. the pipeline run. It defaults to none (the entry
// keeps the labels of an earlier grant).
func WithMetadata(metadata map[string]string) DoOption {
	return func(o *doOptions) { o.metadata = metadata }
}

// WithHeartbeatInterval sets how often the lease is extended while the work
// runs. It defaults to a third of the granted lease TTL, so that two
// heartbeats can fail before the lease runs out. A value of zero or less
// means the default.
func WithHeartbeatInterval(interval time.Duration) DoOption {
	return func(o *doOptions) { o.heartbeatInterval = interval }
}

const (
	// maxPollInterval caps the wait between two Reserves while another
	// worker holds the key and the server did not wait for it, so that its
	// result is replayed soon after it completes even when its lease is long.
	maxPollInterval = time.Second
	// maxServerWait is the longest Do asks the server to wait for another
	// worker in one Reserve (ReserveRequest.wait_timeout); the server may
	// shorten it, and Do asks again while ctx allows.
	maxServerWait = 30 * time.Second
	// minServerWait tells a Reserve that the server held from one it
	// answered at once.
	minServerWait = 500 * time.Millisecond
	// cleanupTimeout bounds the calls Do makes after its context ended:
	// releasing the lease, or recording a result or a panic.
	cleanupTimeout = 5 * time.Second
	// defaultHeartbeatInterval is a third of the ledger's default lease TTL.
	defaultHeartbeatInterval = 10 * time.Second
	// maxErrorMessageBytes bounds the work error message Do records. The
	// server's limit is 8 KiB unless configured.
	maxErrorMessageBytes = 4 << 10
)

// Do makes sure that the work for the key (namespace, key) is done once
// across all the workers that share the ledger: it runs work unless the key
// is finished, records the result, and returns it, or the result recorded
// earlier:
//
//   - If the key is completed, Do returns the stored result with
//     Result.Replayed set, without running work.
//   - If the key failed permanently, Do returns a *FailedError (matching
//     ErrFailed) without running work.
//   - If another worker holds the key, Do waits (as long as ctx allows):
//     its Reserves ask the server to hold the call until the holder
//     completes (Do then replays its result), fails, releases, or dies (its
//     lease runs out and Do takes the key over). A server that answers at
//     once is asked again after its retry-after hint, capped at 1s, with
//     jitter.
//   - Otherwise Do holds the lease and runs work with a context that
//     carries it (see LeaseFromContext and SetCheckpoint). While work runs,
//     a goroutine heartbeats the lease (see WithHeartbeatInterval); it is
//     always stopped before Do returns.
//
// When work returns a result, Do records it with Complete and returns it.
// If the ledger refuses the result as invalid (for example larger than the
// namespace allows), Do records a retryable failure that says why and
// returns the ErrInvalidArgument error.
// When work returns an error, Do records a failure, retryable unless the
// error is marked with Permanent, and returns an error that wraps the
// work's error. A retryable failure releases the key: the next Do of it runs
// work again, as a takeover with a higher fencing token, and sees the last
// checkpoint.
//
// If the lease is lost (another worker took over after this one's lease ran
// out), the work's context is canceled with a cause that matches
// ErrLeaseLost, as soon as a heartbeat learns it, and Do returns an error
// that matches ErrLeaseLost: the work was superseded and its result, if
// any, was not recorded. If a heartbeat is refused for another reason (for
// example a checkpoint above the server's limit), the work's context is
// canceled with that error as its cause; unless the work still returns a
// result, Do then releases the lease and returns that error.
//
// If ctx ends while work runs, the work's context is canceled; when work
// then returns an error, Do releases the lease, so that another worker can
// take over at once, and returns ctx's error. A result that work returns is
// recorded even so. The calls Do makes after ctx ended are bounded by a
// short timeout of their own (5s).
//
// If work panics, Do records a retryable failure with the message
// "panic: <value>" and panics again with the same value. If work calls
// runtime.Goexit (as t.FailNow does), Do releases the lease.
//
// Do fails with ErrInvalidArgument for a bad namespace, key or option (the
// *Error names the field), with ErrFingerprintMismatch, or with ctx's error
// if ctx ends before the work runs. While the server is unavailable, calls
// are retried as the Client's circuit breaker, retry budget and attempt
// limit allow (until ctx ends when they are off), so give ctx a deadline to
// bound Do. When the ledger cannot answer, Do fails closed with an error
// matching ErrUnavailable (a *CircuitOpenError while the breaker is open),
// or, under FailOpen (WithFallback, WithDoFallback), runs the work
// unguarded and returns its result with Result.Unguarded set.
func (c *Client) Do(ctx context.Context, namespace, key string, work func(ctx context.Context) ([]byte, error), opts ...DoOption) (Result, error) {
	o := doOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.owner == "" {
		o.owner = defaultOwner()
	}
	result, err := c.do(ctx, namespace, key, work, o)
	if err != nil {
		return Result{}, fmt.Errorf("ledgerclient: do %s/%s: %w", namespace, key, err)
	}
	return result, nil
}

func (c *Client) do(ctx context.Context, namespace, key string, work func(context.Context) ([]byte, error), o doOptions) (Result, error) {
	if work == nil {
		return Result{}, errors.New("work is nil")
	}
	req := &ledgerv1.ReserveRequest{
		Namespace:   namespace,
		Key:         key,
		Owner:       o.owner,
		Fingerprint: o.fingerprint,
		Metadata:    o.metadata,
	}
	if o.leaseTTL != 0 {
		req.LeaseTtl = durationpb.New(o.leaseTTL)
	}
	for {
		// Ask the server to hold the call while another worker has the key,
		// so that its result (or its lease's end) is seen at once.
		req.WaitTimeout = durationpb.New(serverWait(ctx))
		asked := time.Now()
		response, err := call(ctx, c.policy, "reserve", c.ledger.Reserve, req)
		if err != nil {
			if ctx.Err() == nil && unusable(err) && c.fallbackOf(o) == FailOpen && c.failOpen.admit() {
				return c.runUnguarded(ctx, namespace, key, err, work, o)
			}
			return Result{}, err
		}
		switch outcome := response.GetOutcome().(type) {
		case *ledgerv1.ReserveResponse_Acquired:
			return c.runLeased(ctx, newLeaseState(namespace, key, o.owner, outcome.Acquired), work, o)
		case *ledgerv1.ReserveResponse_Completed:
			completed := outcome.Completed
			return Result{
				Value:        completed.GetResult(),
				FencingToken: completed.GetFencingToken(),
				Replayed:     true,
				CompletedAt:  completed.GetCompletedAt().AsTime(),
			}, nil
		case *ledgerv1.ReserveResponse_Failed:
			failed := outcome.Failed
			return Result{}, &FailedError{
				Namespace:    namespace,
				Key:          key,
				Code:         failed.GetError().GetCode(),
				Message:      failed.GetError().GetMessage(),
				FencingToken: failed.GetFencingToken(),
				Attempts:     int(failed.GetAttempts()),
				FailedAt:     failed.GetFailedAt().AsTime(),
			}
		case *ledgerv1.ReserveResponse_InProgress:
			holder := outcome.InProgress
			if time.Since(asked) >= minServerWait {
				continue // the server waited for the holder: ask again at once
			}
			// The server answered at once (it is shutting down, or predates
			// waiting): wait on our side before asking again.
			if sleep(ctx, pollInterval(holder.GetRetryAfter().AsDuration())) != nil {
				return Result{}, fmt.Errorf("waiting for %s: %w", holder.GetOwner(), contextError(ctx))
			}
		default:
			return Result{}, fmt.Errorf("reserve returned an outcome this client does not know (%T)", outcome)
		}
	}
}

// fallbackOf returns the Fallback of a Do call.
func (c *Client) fallbackOf(o doOptions) Fallback {
	if o.fallback != nil {
		return *o.fallback
	}
	return c.fallback
}

func newLeaseState(namespace, key, owner string, acquired *ledgerv1.Acquired) *leaseState {
	return &leaseState{lease: Lease{
		Namespace:     namespace,
		Key:           key,
		Owner:         owner,
		FencingToken:  acquired.GetFencingToken(),
		Attempt:       int(acquired.GetAttempt()),
		Takeover:      acquired.GetTakeover(),
		PreviousOwner: acquired.GetPreviousOwner(),
		Checkpoint:    acquired.GetCheckpoint(),
		TTL:           acquired.GetLeaseTtl().AsDuration(),
	}}
}

// runLeased runs work under the lease in state, with heartbeats, and records
// what it returns.
func (c *Client) runLeased(ctx context.Context, state *leaseState, work func(context.Context) ([]byte, error), o doOptions) (Result, error) {
	lease := state.lease
	interval := o.heartbeatInterval
	switch {
	case interval > 0:
	case lease.TTL > 0:
		interval = lease.TTL / 3
	default: // the ledger always reports the granted TTL; this is a safety net
		interval = defaultHeartbeatInterval
	}
	workCtx, endWork := context.WithCancelCause(ctx)
	defer endWork(nil)
	heartbeats := c.startHeartbeats(workCtx, endWork, state, interval)
	defer func() { _ = heartbeats.stop() }() // also when work panics or exits its goroutine; the error is read below

	value, workErr := c.runWork(context.WithValue(workCtx, leaseKey{}, state), state, heartbeats, work)
	heartbeatErr := heartbeats.stop()
	switch {
	case errors.Is(heartbeatErr, ErrLeaseLost) && !(errors.Is(heartbeatErr, errLeaseUnconfirmed) && workErr == nil):
		// Complete would be refused: another worker holds the key now.
		return Result{}, fmt.Errorf("work abandoned (token %d): %w", lease.FencingToken, heartbeatErr)
	case workErr == nil:
		result, err := c.complete(ctx, lease, value)
		if errors.Is(err, ErrInvalidArgument) {
			// The ledger refused the result (too large, say): keep the
			// reason on the entry, and free the key for the next attempt.
			err = errors.Join(err, c.fail(ctx, state, errorMessage(err), true))
		}
		return result, err
	case heartbeatErr != nil:
		// The work most likely failed because its context was canceled
		// with heartbeatErr: report the cause, not the symptom.
		return Result{}, errors.Join(
			fmt.Errorf("the lease could not be kept, and was released: %w", heartbeatErr),
			c.release(ctx, state))
	case ctx.Err() != nil:
		return Result{}, errors.Join(
			fmt.Errorf("%w (the lease was released)", contextError(ctx)),
			c.release(ctx, state))
	default:
		var permanent *PermanentError
		retryable := !errors.As(workErr, &permanent)
		failErr := c.fail(ctx, state, errorMessage(workErr), retryable)
		return Result{}, errors.Join(
			fmt.Errorf("work failed (attempt %d, token %d): %w", lease.Attempt, lease.FencingToken, workErr),
			failErr)
	}
}

// complete records the work's result; after ctx ended, with a context of
// its own (see afterward).
func (c *Client) complete(ctx context.Context, lease Lease, value []byte) (Result, error) {
	ctx, cancel := afterward(ctx)
	defer cancel()
	completed, err := call(ctx, c.policy, "complete", c.ledger.Complete, &ledgerv1.CompleteRequest{
		Namespace:    lease.Namespace,
		Key:          lease.Key,
		FencingToken: lease.FencingToken,
		Result:       value,
	})
	if err != nil {
		return Result{}, err
	}
	return Result{
		Value:        value,
		FencingToken: lease.FencingToken,
		Attempt:      lease.Attempt,
		CompletedAt:  completed.GetCompletedAt().AsTime(),
	}, nil
}

// runWork calls work. If work panics, it records a retryable failure and
// panics again; if work exits its goroutine, it releases the lease.
func (c *Client) runWork(ctx context.Context, state *leaseState, heartbeats *heartbeater, work func(context.Context) ([]byte, error)) (value []byte, err error) {
	returned := false
	defer func() {
		if returned {
			return
		}
		p := recover()
		_ = heartbeats.stop()
		if p == nil { // runtime.Goexit
			_ = c.release(ctx, state)
			return
		}
		_ = c.fail(ctx, state, errorMessage(fmt.Errorf("panic: %v", p)), true)
		panic(p)
	}()
	value, err = work(ctx)
	returned = true
	return value, err
}

// fail records the work's failure, after storing a staged checkpoint for
// the next worker when the failure is retryable. If the namespace's stored
// bytes are at their quota, it releases the lease instead.
func (c *Client) fail(ctx context.Context, state *leaseState, message string, retryable bool) error {
	ctx, cancel := afterward(ctx)
	defer cancel()
	if retryable {
		_ = c.storeCheckpoint(ctx, state) // if this fails, so does Fail, with the reason
	}
	_, err := call(ctx, c.policy, "fail", c.ledger.Fail, &ledgerv1.FailRequest{
		Namespace:    state.lease.Namespace,
		Key:          state.lease.Key,
		FencingToken: state.lease.FencingToken,
		Error:        &ledgerv1.WorkError{Message: message},
		Retryable:    retryable,
	})
	if errors.Is(err, ErrQuotaExceeded) {
		// The namespace cannot store the error (max_stored_bytes); rather
		// than leave the lease held until it runs out, give it up: Release
		// stores nothing and is never refused by a quota.
		_, releaseErr := call(ctx, c.policy, "release", c.ledger.Release, &ledgerv1.ReleaseRequest{
			Namespace:    state.lease.Namespace,
			Key:          state.lease.Key,
			FencingToken: state.lease.FencingToken,
		})
		return errors.Join(fmt.Errorf("the failure was not recorded, the lease was released instead: %w", err), releaseErr)
	}
	return err
}

// release gives the lease up, after storing a staged checkpoint for the
// next worker.
func (c *Client) release(ctx context.Context, state *leaseState) error {
	ctx, cancel := afterward(ctx)
	defer cancel()
	_ = c.storeCheckpoint(ctx, state) // if this fails, so does Release, with the reason
	_, err := call(ctx, c.policy, "release", c.ledger.Release, &ledgerv1.ReleaseRequest{
		Namespace:    state.lease.Namespace,
		Key:          state.lease.Key,
		FencingToken: state.lease.FencingToken,
	})
	return err
}

// afterward returns ctx while it has not ended, and otherwise a context
// that keeps its values but not its cancellation, bounded by cleanupTimeout,
// for the calls that must still be made once the caller gave up.
func afterward(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// serverWait is the wait_timeout of Do's Reserves: maxServerWait, or less
// when ctx ends sooner, leaving a tenth of the time left (at most a second)
// for the answer to arrive.
func serverWait(ctx context.Context) time.Duration {
	wait := maxServerWait
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		wait = min(wait, left-min(left/10, time.Second))
	}
	return max(wait, 0)
}

// pollInterval turns the server's retry-after hint into the wait before the
// next Reserve: at most maxPollInterval, plus up to a quarter of jitter, so
// that waiting workers do not ask all at once.
func pollInterval(retryAfter time.Duration) time.Duration {
	wait := min(max(retryAfter, time.Millisecond), maxPollInterval)
	return wait + rand.N(wait/4+1)
}

// errorMessage makes err's text acceptable as a stored error message: valid
// UTF-8 without NUL bytes, not empty, at most maxErrorMessageBytes.
func errorMessage(err error) string {
	message := strings.ReplaceAll(strings.ToValidUTF8(err.Error(), "\uFFFD"), "\x00", "")
	if message == "" {
		message = fmt.Sprintf("%T with an empty message", err)
	}
	if len(message) > maxErrorMessageBytes {
		cut := maxErrorMessageBytes
		for cut > 0 && !utf8.RuneStart(message[cut]) {
			cut--
		}
		message = message[:cut]
	}
	return message
}

// defaultOwner names a worker by its host and process, with a random suffix
// that makes every Do call its own owner.
func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s/%d/%08x", host, os.Getpid(), rand.Uint32())
}
