package ledgerclient

import "sync/atomic"

// Stats is a snapshot of a Client's counters, for metrics and tests.
type Stats struct {
	// Calls counts the calls made (first attempts).
	Calls int64
	// Retries counts the attempts after the first.
	Retries int64
	// RetriesRefused counts the retries that the retry budget refused.
	RetriesRefused int64
	// BreakerState is the circuit breaker's state (BreakerClosed when it is
	// off).
	BreakerState BreakerState
	// BreakerOpens counts the times the breaker opened.
	BreakerOpens int64
	// FailOpenRuns counts the works Do ran unguarded (FailOpen).
	FailOpenRuns int64
	// FailOpenRecorded counts the fail-open results recorded in the ledger.
	FailOpenRecorded int64
	// FailOpenDiscarded counts the fail-open results discarded: the key was
	// completed by someone else, failed, or refused ours.
	FailOpenDiscarded int64
	// FailOpenPending counts the fail-open runs not settled yet: running,
	// or waiting to be recorded.
	FailOpenPending int64
}

// Stats returns a snapshot of the Client's counters.
func (c *Client) Stats() Stats {
	s := Stats{
		Calls:             c.policy.calls.Load(),
		Retries:           c.policy.retries.Load(),
		RetriesRefused:    c.policy.retriesRefused.Load(),
		BreakerState:      BreakerClosed,
		FailOpenRuns:      c.failOpen.runs.load(),
		FailOpenRecorded:  c.failOpen.recorded.load(),
		FailOpenDiscarded: c.failOpen.discarded.load(),
		FailOpenPending:   int64(c.failOpen.pendingCount()),
	}
	if c.policy.breaker != nil {
		state, opens := c.policy.breaker.snapshot()
		s.BreakerState, s.BreakerOpens = state, int64(opens)
	}
	return s
}

// BreakerState returns the circuit breaker's state: BreakerClosed,
// BreakerOpen or BreakerHalfOpen (BreakerClosed when it is off).
func (c *Client) BreakerState() BreakerState { return c.Stats().BreakerState }

// atomicCounter is a counter safe for concurrent use.
type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) add()        { c.n.Add(1) }
func (c *atomicCounter) load() int64 { return c.n.Load() }
