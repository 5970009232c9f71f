package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramPercentiles(t *testing.T) {
	t.Parallel()
	h := NewHistogram()
	// 1µs … 100ms, uniformly: the p-th percentile is p% of 100ms.
	for us := 1; us <= 100_000; us++ {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	l := h.Latency()
	require.Equal(t, int64(100_000), h.Count())
	// HDR with 3 significant digits: within 0.1% of the exact rank.
	require.InEpsilon(t, 50_000, l.P50Micros, 0.001)
	require.InEpsilon(t, 95_000, l.P95Micros, 0.001)
	require.InEpsilon(t, 99_000, l.P99Micros, 0.001)
	require.InEpsilon(t, 99_900, l.P999Micros, 0.001)
	require.InEpsilon(t, 100_000, l.MaxMicros, 0.001)
	require.InEpsilon(t, 50_000, l.MeanMicros, 0.001)
}

func TestHistogramMergeAndClamp(t *testing.T) {
	t.Parallel()
	fast, slow := NewHistogram(), NewHistogram()
	for range 99 {
		fast.Record(time.Millisecond)
	}
	slow.Record(time.Hour)       // beyond the range: clamped, still counted
	slow.Record(time.Nanosecond) // below it: counted as 1µs
	fast.Merge(slow)
	l := fast.Latency()
	require.Equal(t, int64(101), fast.Count())
	require.InEpsilon(t, 1000, l.P50Micros, 0.001)
	require.InEpsilon(t, histogramMax, l.MaxMicros, 0.001)
}

func TestHistogramEmpty(t *testing.T) {
	t.Parallel()
	require.Equal(t, Latency{}, NewHistogram().Latency())
}
