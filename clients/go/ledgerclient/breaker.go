package ledgerclient

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// BreakerState is the state of a Client's circuit breaker.
type BreakerState string

// The states of the circuit breaker.
const (
	// BreakerClosed lets every call through: ledgerd answers.
	BreakerClosed BreakerState = "closed"
	// BreakerOpen fails the guarded calls at once with a *CircuitOpenError,
	// without touching the network, for BreakerConfig.OpenFor.
	BreakerOpen BreakerState = "open"
	// BreakerHalfOpen lets one guarded call through as a probe: its success
	// closes the breaker, its failure opens it again.
	BreakerHalfOpen BreakerState = "half_open"
)

// BreakerConfig configures a Client's circuit breaker (WithCircuitBreaker).
// The breaker counts every call attempt that ledgerd did not answer
// (UNAVAILABLE, DEADLINE_EXCEEDED: a connection refused or reset is
// UNAVAILABLE); any answer from ledgerd, an error included, shows it is
// alive. An attempt the caller canceled counts as neither. A zero field
// takes its default.
type BreakerConfig struct {
	// FailureThreshold opens the breaker after that many consecutive
	// unanswered attempts. Defaults to 5.
	FailureThreshold int
	// FailureRatio opens the breaker when, over the last Window, at least
	// MinCalls attempts were made and this share of them was unanswered.
	// Defaults to 0.5.
	FailureRatio float64
	// Window is the span FailureRatio is measured over. Defaults to 10s.
	Window time.Duration
	// MinCalls is the fewest attempts in Window for FailureRatio to count.
	// Defaults to 20.
	MinCalls int
	// OpenFor is how long the breaker stays open before it lets a probe
	// through. Defaults to 5s.
	OpenFor time.Duration
	// OnStateChange, if set, is called on every transition, after it, with
	// the last unanswered attempt's error (nil when closing). It must not
	// block: it runs on the goroutine of the call that made the transition.
	OnStateChange func(from, to BreakerState, lastErr error)
}

// withDefaults returns cfg with its zero fields set to their defaults.
func (cfg BreakerConfig) withDefaults() BreakerConfig {
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = 5
	}
	if cfg.FailureRatio == 0 {
		cfg.FailureRatio = 0.5
	}
	if cfg.Window == 0 {
		cfg.Window = 10 * time.Second
	}
	if cfg.MinCalls == 0 {
		cfg.MinCalls = 20
	}
	if cfg.OpenFor == 0 {
		cfg.OpenFor = 5 * time.Second
	}
	return cfg
}

// validate names the first field out of range.
func (cfg BreakerConfig) validate() error {
	switch {
	case cfg.FailureThreshold < 0:
		return fmt.Errorf("circuit breaker: FailureThreshold must be at least 1, got %d", cfg.FailureThreshold)
	case cfg.FailureRatio < 0 || cfg.FailureRatio > 1:
		return fmt.Errorf("circuit breaker: FailureRatio must be in (0, 1], got %g", cfg.FailureRatio)
	case cfg.Window < 0:
		return fmt.Errorf("circuit breaker: Window must be positive, got %s", cfg.Window)
	case cfg.MinCalls < 0:
		return fmt.Errorf("circuit breaker: MinCalls must be at least 1, got %d", cfg.MinCalls)
	case cfg.OpenFor < 0:
		return fmt.Errorf("circuit breaker: OpenFor must be positive, got %s", cfg.OpenFor)
	}
	return nil
}

// ErrCircuitOpen is matched by the *CircuitOpenError of a call that the
// open circuit breaker refused.
var ErrCircuitOpen = errors.New("ledgerd: circuit open")

// CircuitOpenError is the error of a call that the circuit breaker refused
// without sending it: ledgerd has not been answering. It matches both
// ErrCircuitOpen and ErrUnavailable with errors.Is, so that code that
// handles "ledgerd unavailable" handles it too.
type CircuitOpenError struct {
	// Since is when the breaker opened (the first time, if probes failed
	// since).
	Since time.Time
	// LastError is the error of the last attempt ledgerd did not answer.
	LastError error

	now time.Time // when the call was refused, for the message
}

// Error says since when the circuit is open, and why.
func (e *CircuitOpenError) Error() string {
	ago := e.now.Sub(e.Since).Round(100 * time.Millisecond)
	return fmt.Sprintf("ledgerd: circuit open since %s (%s ago), last error: %v",
		e.Since.UTC().Format(time.RFC3339), ago, e.LastError)
}

// Is makes errors.Is match ErrCircuitOpen and ErrUnavailable.
func (e *CircuitOpenError) Is(target error) bool {
	return target == ErrCircuitOpen || target == ErrUnavailable
}

// Unwrap returns LastError, so that errors.As finds the *Error (and
// status.Code the gRPC code) of the failure that opened the circuit.
func (e *CircuitOpenError) Unwrap() error { return e.LastError }

// attemptOutcome is what an attempt tells the breaker.
type attemptOutcome int

const (
	// answered: ledgerd answered (OK or an error of its own).
	answeredOutcome attemptOutcome = iota
	// unanswered: UNAVAILABLE or DEADLINE_EXCEEDED.
	unansweredOutcome
	// canceled by the caller: tells nothing.
	canceledOutcome
)

// breakerBuckets is how many slices the failure-ratio window is kept in:
// old attempts leave the window a slice at a time.
const breakerBuckets = 10

type breakerBucket struct {
	start           time.Time
	calls, failures int
}

// breaker is the circuit breaker's state machine. It is safe for
// concurrent use.
type breaker struct {
	cfg BreakerConfig
	now func() time.Time

	mu          sync.Mutex
	state       BreakerState
	consecutive int
	buckets     [breakerBuckets]breakerBucket
	since       time.Time // when it opened, kept while probes fail
	openedAt    time.Time // when it (re)opened: OpenFor runs from here
	probing     bool      // a half-open probe is out
	lastCounted time.Time // when the last outcome that counted in the streak came back
	lastErr     error
	opens       int
}

func newBreaker(cfg BreakerConfig, now func() time.Time) *breaker {
	return &breaker{cfg: cfg.withDefaults(), now: now, state: BreakerClosed}
}

// allow reports whether a guarded attempt may be made now, and whether it
// is the half-open probe (whose outcome must then be recorded with
// probe=true). A refusal comes as a *CircuitOpenError.
func (b *breaker) allow() (probe bool, err error) {
	b.mu.Lock()
	now := b.now()
	var changed func()
	defer func() {
		b.mu.Unlock()
		if changed != nil {
			changed()
		}
	}()
	switch b.state {
	case BreakerClosed:
		return false, nil
	case BreakerOpen:
		if now.Sub(b.openedAt) < b.cfg.OpenFor {
			return false, b.refusal(now)
		}
		changed = b.transition(BreakerHalfOpen)
	case BreakerHalfOpen:
	}
	// Half-open: one probe at a time.
	if b.probing {
		return false, b.refusal(now)
	}
	b.probing = true
	return true, nil
}

func (b *breaker) refusal(now time.Time) error {
	return &CircuitOpenError{Since: b.since, LastError: b.lastErr, now: now}
}

// record counts an attempt's outcome; probe says it was the half-open
// probe that allow let through, started when the attempt was sent.
//
// A failed attempt adds to the consecutive failures only if it was sent
// after the last outcome that counted (it always counts in the window):
// attempts in flight together that fail together, as the calls on one
// replica of several that dies do, are one failure, not a streak; the
// attempts sent after them (to the replicas left) say whether the ledger
// is away.
func (b *breaker) record(outcome attemptOutcome, err error, probe bool, started time.Time) {
	b.mu.Lock()
	var changed func()
	defer func() {
		b.mu.Unlock()
		if changed != nil {
			changed()
		}
	}()
	if probe {
		b.probing = false
	}
	if outcome == canceledOutcome {
		return
	}
	now := b.now()
	failed := outcome == unansweredOutcome
	if failed {
		b.lastErr = err
	}
	switch b.state {
	case BreakerOpen:
		return // unguarded calls still go out; only a probe decides
	case BreakerHalfOpen:
		if !probe {
			return
		}
		if failed {
			b.openedAt = now
			changed = b.transition(BreakerOpen)
		} else {
			changed = b.transition(BreakerClosed)
		}
		return
	case BreakerClosed:
	}
	bucket := b.bucket(now)
	bucket.calls++
	if !failed {
		b.consecutive = 0
		b.lastCounted = now
		return
	}
	bucket.failures++
	if started.Before(b.lastCounted) {
		return
	}
	b.consecutive++
	b.lastCounted = now
	calls, failures := b.windowCounts(now)
	if b.consecutive >= b.cfg.FailureThreshold ||
		(calls >= b.cfg.MinCalls && float64(failures) >= b.cfg.FailureRatio*float64(calls)) {
		b.since, b.openedAt = now, now
		changed = b.transition(BreakerOpen)
	}
}

// bucket returns the bucket of now, recycling one that left the window.
func (b *breaker) bucket(now time.Time) *breakerBucket {
	width := b.cfg.Window / breakerBuckets
	start := now.Truncate(max(width, time.Nanosecond))
	bucket := &b.buckets[(start.UnixNano()/int64(max(width, 1)))%breakerBuckets]
	if !bucket.start.Equal(start) {
		*bucket = breakerBucket{start: start}
	}
	return bucket
}

// windowCounts sums the attempts and failures of the last Window.
func (b *breaker) windowCounts(now time.Time) (calls, failures int) {
	for _, bucket := range b.buckets {
		if now.Sub(bucket.start) < b.cfg.Window {
			calls += bucket.calls
			failures += bucket.failures
		}
	}
	return calls, failures
}

// transition moves to state (b.mu held) and returns the hook call to make
// once the lock is released.
func (b *breaker) transition(to BreakerState) func() {
	from := b.state
	b.state = to
	switch to {
	case BreakerOpen:
		b.opens++
	case BreakerClosed:
		b.consecutive = 0
		b.buckets = [breakerBuckets]breakerBucket{}
		b.since = time.Time{}
	case BreakerHalfOpen:
	}
	hook, lastErr := b.cfg.OnStateChange, b.lastErr
	if to == BreakerClosed {
		lastErr = nil
	}
	if hook == nil || from == to {
		return nil
	}
	return func() { hook(from, to, lastErr) }
}

// snapshot returns the state and how many times the breaker opened. An
// open breaker whose OpenFor has passed reports half_open: the next
// guarded call is the probe.
func (b *breaker) snapshot() (BreakerState, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen && b.now().Sub(b.openedAt) >= b.cfg.OpenFor {
		return BreakerHalfOpen, b.opens
	}
	return b.state, b.opens
}
