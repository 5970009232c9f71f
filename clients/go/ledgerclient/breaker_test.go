package ledgerclient

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeClock is a clock the tests move by hand.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) advance(d time.Duration) { c.now = c.now.Add(d) }

var errDown = errors.New("UNAVAILABLE: connection refused")

type transition struct{ from, to BreakerState }

func newTestBreaker(cfg BreakerConfig) (*breaker, *fakeClock, *[]transition) {
	clock := &fakeClock{now: time.Date(2026, 12, 7, 10, 31, 2, 0, time.UTC)}
	var seen []transition
	cfg.OnStateChange = func(from, to BreakerState, _ error) { seen = append(seen, transition{from, to}) }
	return newBreaker(cfg, clock.Now), clock, &seen
}

func mustAllow(t *testing.T, b *breaker) bool {
	t.Helper()
	probe, err := b.allow()
	if err != nil {
		t.Fatalf("allow: %v", err)
	}
	return probe
}

func TestBreaker(t *testing.T) {
	t.Parallel()

	t.Run("opens after FailureThreshold consecutive failures, refuses with since and last error", func(t *testing.T) {
		t.Parallel()
		b, clock, seen := newTestBreaker(BreakerConfig{FailureThreshold: 3, OpenFor: time.Second})
		for range 2 {
			mustAllow(t, b)
			b.record(unansweredOutcome, errDown, false, clock.now)
		}
		mustAllow(t, b)
		b.record(answeredOutcome, nil, false, clock.now) // an answer resets the streak
		for range 3 {
			mustAllow(t, b)
			b.record(unansweredOutcome, errDown, false, clock.now)
		}
		if state, opens := b.snapshot(); state != BreakerOpen || opens != 1 {
			t.Fatalf("state %s, opens %d; want open, 1", state, opens)
		}
		opened := clock.now
		clock.advance(3200 * time.Millisecond / 4)
		_, err := b.allow()
		var open *CircuitOpenError
		if !errors.As(err, &open) || !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("allow while open: %v; want a *CircuitOpenError matching ErrUnavailable", err)
		}
		if !open.Since.Equal(opened) || !errors.Is(open.LastError, errDown) {
			t.Fatalf("since %s, last error %v", open.Since, open.LastError)
		}
		want := "ledgerd: circuit open since 2026-12-07T10:31:02Z (800ms ago), last error: UNAVAILABLE: connection refused"
		if err.Error() != want {
			t.Fatalf("message %q, want %q", err.Error(), want)
		}
		if len(*seen) != 1 || (*seen)[0] != (transition{BreakerClosed, BreakerOpen}) {
			t.Fatalf("transitions %v", *seen)
		}
	})

	t.Run("half-open lets one probe through; its failure reopens, its success closes", func(t *testing.T) {
		t.Parallel()
		b, clock, seen := newTestBreaker(BreakerConfig{FailureThreshold: 1, OpenFor: time.Second})
		mustAllow(t, b)
		b.record(unansweredOutcome, errDown, false, clock.now)
		since := clock.now
		clock.advance(time.Second)
		if state, _ := b.snapshot(); state != BreakerHalfOpen {
			t.Fatalf("state after OpenFor: %s", state)
		}
		if !mustAllow(t, b) {
			t.Fatal("the first call after OpenFor is not the probe")
		}
		if _, err := b.allow(); !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("a second call while the probe is out: %v", err)
		}
		b.record(unansweredOutcome, errDown, true, clock.now)
		clock.advance(500 * time.Millisecond)
		_, err := b.allow()
		var open *CircuitOpenError
		if !errors.As(err, &open) || !open.Since.Equal(since) {
			t.Fatalf("reopened: %v (since stays the first opening)", err)
		}
		clock.advance(500 * time.Millisecond)
		if !mustAllow(t, b) {
			t.Fatal("no probe after the second OpenFor")
		}
		b.record(answeredOutcome, nil, true, clock.now)
		if state, opens := b.snapshot(); state != BreakerClosed || opens != 2 {
			t.Fatalf("state %s, opens %d; want closed, 2", state, opens)
		}
		want := []transition{
			{BreakerClosed, BreakerOpen}, {BreakerOpen, BreakerHalfOpen}, {BreakerHalfOpen, BreakerOpen},
			{BreakerOpen, BreakerHalfOpen}, {BreakerHalfOpen, BreakerClosed},
		}
		if len(*seen) != len(want) {
			t.Fatalf("transitions %v, want %v", *seen, want)
		}
		for i := range want {
			if (*seen)[i] != want[i] {
				t.Fatalf("transitions %v, want %v", *seen, want)
			}
		}
	})

	t.Run("failures of attempts sent before the last answer do not make a streak", func(t *testing.T) {
		t.Parallel()
		b, clock, _ := newTestBreaker(BreakerConfig{FailureThreshold: 2})
		sent := clock.now
		clock.advance(time.Millisecond)
		b.record(answeredOutcome, nil, false, clock.now)
		for range 5 { // in flight on a replica that died
			b.record(unansweredOutcome, errDown, false, sent)
		}
		if state, _ := b.snapshot(); state != BreakerClosed {
			t.Fatalf("state %s, want closed", state)
		}
		// A burst sent together after that answer counts once.
		sent = clock.now
		clock.advance(time.Millisecond)
		for range 5 {
			b.record(unansweredOutcome, errDown, false, sent)
		}
		if state, _ := b.snapshot(); state != BreakerClosed {
			t.Fatalf("state %s after a burst, want closed", state)
		}
		b.record(unansweredOutcome, errDown, false, clock.now) // sent after the burst failed
		if state, _ := b.snapshot(); state != BreakerOpen {
			t.Fatalf("state %s, want open", state)
		}
	})

	t.Run("a canceled probe frees the probe slot without a transition", func(t *testing.T) {
		t.Parallel()
		b, clock, _ := newTestBreaker(BreakerConfig{FailureThreshold: 1, OpenFor: time.Second})
		b.record(unansweredOutcome, errDown, false, clock.now)
		clock.advance(time.Second)
		mustAllow(t, b)
		b.record(canceledOutcome, errDown, true, clock.now)
		if !mustAllow(t, b) {
			t.Fatal("the next call is not the probe")
		}
	})

	t.Run("opens on the failure ratio over the window, with MinCalls", func(t *testing.T) {
		t.Parallel()
		b, clock, _ := newTestBreaker(BreakerConfig{FailureThreshold: 100, FailureRatio: 0.5, MinCalls: 10, Window: 10 * time.Second})
		// Alternate: never two failures in a row, half of them failed.
		for i := range 9 {
			b.record(attemptOutcome(i%2), errDown, false, clock.now)
			clock.advance(100 * time.Millisecond)
		}
		if state, _ := b.snapshot(); state != BreakerClosed {
			t.Fatalf("opened below MinCalls: %s", state)
		}
		b.record(unansweredOutcome, errDown, false, clock.now) // 10 calls, 5 failed
		if state, _ := b.snapshot(); state != BreakerOpen {
			t.Fatalf("state %s, want open at ratio 0.5 over 10 calls", state)
		}
	})

	t.Run("attempts older than the window do not count", func(t *testing.T) {
		t.Parallel()
		// The same attempts, with and without the window passing between
		// the first four (2 of 4 failed: below the ratio) and two failures.
		for _, wait := range []time.Duration{0, 2 * time.Second} {
			b, clock, _ := newTestBreaker(BreakerConfig{FailureThreshold: 100, FailureRatio: 0.6, MinCalls: 4, Window: time.Second})
			for _, outcome := range []attemptOutcome{unansweredOutcome, answeredOutcome, unansweredOutcome, answeredOutcome} {
				b.record(outcome, errDown, false, clock.now)
			}
			clock.advance(wait)
			b.record(unansweredOutcome, errDown, false, clock.now)
			b.record(unansweredOutcome, errDown, false, clock.now)
			want := BreakerOpen // 4 of 6 failed
			if wait > 0 {
				want = BreakerClosed // 2 attempts in the window: below MinCalls
			}
			if state, _ := b.snapshot(); state != want {
				t.Fatalf("after a wait of %s: state %s, want %s", wait, state, want)
			}
		}
	})

	t.Run("config out of range names the field", func(t *testing.T) {
		t.Parallel()
		err := BreakerConfig{FailureRatio: 1.5}.validate()
		if err == nil || !strings.Contains(err.Error(), "FailureRatio") {
			t.Fatalf("validate: %v", err)
		}
	})
}

func TestRetryBudget(t *testing.T) {
	t.Parallel()

	t.Run("retries never exceed MaxTokens + Ratio × calls", func(t *testing.T) {
		t.Parallel()
		b := newRetryBucket(RetryBudget{MaxTokens: 3, Ratio: 0.1})
		retries := 0
		for range 100 {
			b.call()
			for b.retry() {
				retries++
			}
		}
		// The bucket starts full (3), and 100 calls credit 10 more; the
		// credits of the calls made while it was full are lost.
		if retries < 3+9 || retries > 3+10 {
			t.Fatalf("%d retries for 100 calls, want 12 or 13", retries)
		}
	})

	t.Run("ten credits of 0.1 make exactly one token", func(t *testing.T) {
		t.Parallel()
		b := newRetryBucket(RetryBudget{MaxTokens: 1, Ratio: 0.1})
		if !b.retry() || b.retry() {
			t.Fatal("a full bucket of 1 gives exactly one retry")
		}
		for range 10 {
			b.call()
		}
		if !b.retry() {
			t.Fatal("10 calls at 0.1 did not credit a whole token")
		}
	})

	t.Run("the policy refuses a retry with the last error, saying why", func(t *testing.T) {
		t.Parallel()
		p := &callPolicy{budget: newRetryBucket(RetryBudget{MaxTokens: 1, Ratio: 0.1})}
		if _, err := p.admit("lookup", 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := p.admit("lookup", 2, errDown); err != nil {
			t.Fatal(err)
		}
		_, err := p.admit("lookup", 3, errDown)
		if !errors.Is(err, errDown) || !strings.Contains(err.Error(), "retry budget exhausted") {
			t.Fatalf("refused retry: %v", err)
		}
		if _, err := p.admit("heartbeat", 2, errDown); err != nil {
			t.Fatalf("heartbeats are outside the budget: %v", err)
		}
		if got := p.retriesRefused.Load(); got != 1 {
			t.Fatalf("retries refused %d, want 1", got)
		}
	})
}
