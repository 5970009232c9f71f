package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The range a Histogram tracks, in microseconds: 1µs to 10 minutes, with 3
// significant digits (a recorded value is off by at most 0.1%).
const (
	histogramMin     = 1
	histogramMax     = int64(10 * time.Minute / time.Microsecond)
	histogramSigFigs = 3
)

// Histogram records latencies. It is an HDR histogram (constant memory,
// relative precision across the whole range), and it is not safe for
// concurrent use: each worker has its own, and they are merged at the end.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(histogramMin, histogramMax, histogramSigFigs)}
}

// Record adds one latency. Values outside the tracked range are clamped to
// it, so that no sample is lost from the count.
func (h *Histogram) Record(d time.Duration) {
	us := min(max(d.Microseconds(), histogramMin), histogramMax)
	_ = h.h.RecordValue(us) // cannot fail: us is within the range
}

// Merge adds every value of other to h.
func (h *Histogram) Merge(other *Histogram) { h.h.Merge(other.h) }

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Latency summarises the histogram. All fields are zero when it is empty.
func (h *Histogram) Latency() Latency {
	if h.h.TotalCount() == 0 {
		return Latency{}
	}
	values := h.h.ValueAtPercentilesSlice([]float64{50, 95, 99, 99.9})
	return Latency{
		P50Micros:  values[0],
		P95Micros:  values[1],
		P99Micros:  values[2],
		P999Micros: values[3],
		MaxMicros:  h.h.Max(),
		MeanMicros: h.h.Mean(),
	}
}

// Latency is the distribution of an operation's latency, in microseconds.
// A percentile is the highest value equivalent (within 0.1%) to the sample
// at that rank.
type Latency struct {
	P50Micros  int64   `json:"p50_us"`
	P95Micros  int64   `json:"p95_us"`
	P99Micros  int64   `json:"p99_us"`
	P999Micros int64   `json:"p99_9_us"`
	MaxMicros  int64   `json:"max_us"`
	MeanMicros float64 `json:"mean_us"`
}
