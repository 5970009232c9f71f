package ledgerclient

import (
	"fmt"
	"sync"
)

// RetryBudget bounds a Client's retries, as gRPC's retry throttling does:
// a token bucket that starts full with MaxTokens; every call's first
// attempt adds Ratio tokens (up to MaxTokens), every retry spends one and
// is made only if a whole token is there. Retries therefore never exceed
// MaxTokens + Ratio × calls, however long ledgerd is sick. A call denied a
// retry fails with its last error, whose message says "retry budget
// exhausted". Heartbeats are outside the budget (they keep a granted lease
// alive), and so is Do's waiting for a key another worker holds (waiting is
// not retrying). A zero field takes its default.
type RetryBudget struct {
	// MaxTokens is the bucket's size, and how many retries a burst of
	// failures may make. Defaults to 100: enough for the calls in flight on
	// a replica that stops to be retried on the others.
	MaxTokens float64
	// Ratio is the tokens each call's first attempt adds: the share of
	// calls that may be retried in the long run. Defaults to 0.1.
	Ratio float64
}

func (cfg RetryBudget) withDefaults() RetryBudget {
	if cfg.MaxTokens == 0 {
		cfg.MaxTokens = 100
	}
	if cfg.Ratio == 0 {
		cfg.Ratio = 0.1
	}
	return cfg
}

func (cfg RetryBudget) validate() error {
	switch {
	case cfg.MaxTokens < 0:
		return fmt.Errorf("retry budget: MaxTokens must be at least 1, got %g", cfg.MaxTokens)
	case cfg.Ratio < 0:
		return fmt.Errorf("retry budget: Ratio must be positive, got %g", cfg.Ratio)
	}
	return nil
}

// milliToken is the bucket's unit: counting thousandths of a token in an
// integer keeps ten credits of 0.1 exactly one token (as gRPC does).
const milliToken = 1000

// retryBucket is RetryBudget's token bucket; safe for concurrent use.
type retryBucket struct {
	max, credit int64 // in thousandths of a token

	mu     sync.Mutex
	tokens int64 // in thousandths of a token
}

func newRetryBucket(cfg RetryBudget) *retryBucket {
	cfg = cfg.withDefaults()
	size := int64(cfg.MaxTokens * milliToken)
	return &retryBucket{max: size, credit: int64(cfg.Ratio * milliToken), tokens: size}
}

// call credits a call's first attempt.
func (b *retryBucket) call() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.tokens+b.credit, b.max)
}

// retry spends a token for a retry, and reports whether there was one.
func (b *retryBucket) retry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < milliToken {
		return false
	}
	b.tokens -= milliToken
	return true
}
