package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRateLimitsReplacedKeepTheBuckets: replacing the limits keeps each
// bucket's tokens (a principal that spent its burst gets no fresh one from
// a reload), applies the new rate and burst from then on, and zero rates
// turn the limits off.
func TestRateLimitsReplacedKeepTheBuckets(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_000_000, 0)
	limiter := newRateLimiter(RateLimits{PerPrincipal: Rate{PerSecond: 1, Burst: 2}})
	admitted := func(principal string, at time.Time) bool {
		ok, _, _ := limiter.admit(principal, "ns", 1, at)
		return ok
	}
	require.True(t, admitted("alice", start))
	require.True(t, admitted("alice", start))
	require.False(t, admitted("alice", start), "burst of 2 spent")

	limiter.setLimits(RateLimits{PerPrincipal: Rate{PerSecond: 1, Burst: 10}}, start)
	require.False(t, admitted("alice", start), "the bucket is kept: a new one would hold 10 tokens")
	require.True(t, admitted("bob", start), "a principal without a bucket gets one at the new burst")
	for range 9 {
		require.True(t, admitted("bob", start))
	}
	require.False(t, admitted("bob", start), "bob's new bucket holds the new burst, 10")

	require.True(t, admitted("alice", start.Add(time.Second)), "one second refills one token at 1/s")
	require.False(t, admitted("alice", start.Add(time.Second)))

	limiter.setLimits(RateLimits{PerPrincipal: Rate{PerSecond: 100, Burst: 10}}, start.Add(time.Second))
	later := start.Add(time.Second + 50*time.Millisecond)
	for range 5 {
		require.True(t, admitted("alice", later), "50ms at the new 100/s refill 5 tokens")
	}
	require.False(t, admitted("alice", later))

	limiter.setLimits(RateLimits{}, later)
	require.True(t, limiter.unlimited())
	for range 20 {
		require.True(t, admitted("alice", later), "zero rates: unlimited")
	}

	limiter.setLimits(RateLimits{PerNamespace: Rate{PerSecond: 1, Burst: 1}}, later)
	require.True(t, admitted("carol", later))
	require.False(t, admitted("dave", later), "the namespace limit applies to every principal of ns")
}
