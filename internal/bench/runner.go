package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// maxErrorSamples bounds the distinct error messages a measurement keeps.
const maxErrorSamples = 5

// abortAfterErrors: a phase stops early once this many operations failed
// and they outnumber the successful ones; its figures would mean nothing.
const abortAfterErrors = 100

// measurement is what a phase of workers did.
type measurement struct {
	ops, items, errors int64
	elapsed            time.Duration
	histogram          *Histogram
	outcomes           map[string]int64
	errorSamples       []string
	aborted            bool
}

// phase is one timed run of a workload's operation by a number of workers.
type phase struct {
	workers  int
	newOp    func(worker int) Op
	duration time.Duration // 0: until ops
	ops      int64         // 0: until duration
	rate     int64         // operations a second in all; 0: flat out
	// progress, when not nil, receives a line every progressEvery.
	progress      io.Writer
	progressEvery time.Duration
	label         string
}

// run runs the phase and merges the workers' measurements. Each operation
// is timed alone; a failed one counts as an error, not in the histogram.
// The phase ends when its duration has passed (the operations in flight
// then finish and count) or its ops are done, or ctx ends.
func (p phase) run(ctx context.Context) measurement {
	var (
		done, failed atomic.Int64
		remaining    atomic.Int64
		stop         atomic.Bool
		mu           sync.Mutex
		wg           sync.WaitGroup
	)
	remaining.Store(p.ops)
	total := measurement{histogram: NewHistogram(), outcomes: map[string]int64{}}
	start := time.Now()
	end := start.Add(p.duration)
	var pace *rate.Limiter
	if p.rate > 0 {
		pace = rate.NewLimiter(rate.Limit(p.rate), 1)
	}
	for worker := range p.workers {
		op := p.newOp(worker)
		wg.Go(func() {
			mine := measurement{histogram: NewHistogram(), outcomes: map[string]int64{}}
			for !stop.Load() && ctx.Err() == nil {
				if p.duration > 0 && !time.Now().Before(end) {
					break
				}
				if p.ops > 0 && remaining.Add(-1) < 0 {
					break
				}
				began := time.Now()
				if pace != nil {
					// Open loop: the operation is due at its slot, and its
					// latency counts from then, even if the worker is late.
					began = began.Add(pace.Reserve().Delay())
					if wait := time.Until(began); wait > 0 {
						time.Sleep(wait)
					}
				}
				d, err := op(ctx)
				took := time.Since(began)
				if err != nil {
					mine.errors++
					mine.errorSamples = addSample(mine.errorSamples, err.Error())
					if n := failed.Add(1); n >= abortAfterErrors && n > done.Load() {
						mine.aborted = true
						stop.Store(true)
					}
					continue
				}
				done.Add(1)
				mine.ops++
				mine.items += int64(max(d.Items, 1))
				mine.histogram.Record(took)
				if d.Outcome != "" {
					mine.outcomes[d.Outcome]++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			total.merge(mine)
		})
	}
	stopProgress := p.reportProgress(start, &done, &failed)
	wg.Wait()
	stopProgress()
	total.elapsed = time.Since(start)
	return total
}

func (m *measurement) merge(other measurement) {
	m.ops += other.ops
	m.items += other.items
	m.errors += other.errors
	m.histogram.Merge(other.histogram)
	for outcome, n := range other.outcomes {
		m.outcomes[outcome] += n
	}
	for _, sample := range other.errorSamples {
		m.errorSamples = addSample(m.errorSamples, sample)
	}
	m.aborted = m.aborted || other.aborted
}

// addSample adds message to samples unless it is there or samples is full.
func addSample(samples []string, message string) []string {
	if len(samples) >= maxErrorSamples {
		return samples
	}
	for _, s := range samples {
		if s == message {
			return samples
		}
	}
	return append(samples, message)
}

// reportProgress prints a line every progressEvery until the returned
// function is called: the rate since the last line and the totals.
func (p phase) reportProgress(start time.Time, done, failed *atomic.Int64) (stop func()) {
	if p.progress == nil || p.progressEvery <= 0 {
		return func() {}
	}
	ticker := time.NewTicker(p.progressEvery)
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer ticker.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-quit:
				return
			case now := <-ticker.C:
				n := done.Load()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				fmt.Fprintf(p.progress, "ledgerbench: %s  %4.0fs  %8.0f op/s  (%d ops, %d errors)\n",
					p.label, now.Sub(start).Seconds(), rate, n, failed.Load())
				last, lastAt = n, now
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

// outcomesCopy returns m's outcome counts, or nil if there are none.
func (m *measurement) outcomesCopy() map[string]int64 {
	if len(m.outcomes) == 0 {
		return nil
	}
	return maps.Clone(m.outcomes)
}
