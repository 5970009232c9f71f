package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// recorder is a batch runner that records the batches it was given, can
// hold them until released, and fails any batch holding "poison".
type recorder struct {
	mu      sync.Mutex
	batches [][]string
	hold    chan struct{} // when not nil, each batch waits for it to close
	started chan struct{} // receives once per batch started
}

func (r *recorder) run(ctx context.Context, items []string) ([]string, error) {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(items))
	hold := r.hold
	r.mu.Unlock()
	if r.started != nil {
		r.started <- struct{}{}
	}
	if hold != nil {
		<-hold
	}
	if slices.Contains(items, "poison") {
		return nil, errors.New("the statement failed")
	}
	out := make([]string, len(items))
	for i, item := range items {
		out[i] = "done:" + item
	}
	return out, nil
}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sizes []int
	for _, b := range r.batches {
		sizes = append(sizes, len(b))
	}
	return sizes
}

func identity(s string) string { return s }

func TestCoalescerAlone(t *testing.T) {
	r := &recorder{}
	c := newCoalescer(CoalesceConfig{MaxBatch: 10, MaxInFlight: 2, MaxWait: time.Hour}, identity, r.run)
	for i := range 3 {
		out, err := c.do(context.Background(), fmt.Sprint("k", i))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint("done:k", i), out)
	}
	require.Equal(t, []int{1, 1, 1}, r.sizes(), "under light load a call goes at once, alone, whatever MaxWait")
	require.Equal(t, CoalesceStats{Batches: 3, Items: 3}, c.stats())
}

// A lone call runs with its caller's own context, in its caller's goroutine:
// no dispatcher is started for it.
func TestCoalescerAloneRunsInItsCaller(t *testing.T) {
	type callerKey struct{}
	var c *coalescer[string, string]
	var sawCaller, sawDispatcher bool
	c = newCoalescer(CoalesceConfig{MaxBatch: 10, MaxInFlight: 1}, identity, func(ctx context.Context, items []string) ([]string, error) {
		sawCaller = ctx.Value(callerKey{}) == "me"
		c.mu.Lock()
		sawDispatcher = c.dispatching
		c.mu.Unlock()
		return []string{"done:" + items[0]}, nil
	})
	out, err := c.do(context.WithValue(context.Background(), callerKey{}, "me"), "k")
	require.NoError(t, err)
	require.Equal(t, "done:k", out)
	require.True(t, sawCaller, "the statement ran with the caller's context")
	require.False(t, sawDispatcher, "no dispatcher ran")
	require.Empty(t, c.slots, "the slot was given back")
}

// With MaxInFlight above 1, a call that finds a statement running and a
// slot free does not run alone: it waits up to MaxWait to gather others.
func TestCoalescerLingersBesideARunningStatement(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), started: make(chan struct{}, 100)}
	c := newCoalescer(CoalesceConfig{MaxBatch: 3, MaxInFlight: 2, MaxWait: time.Hour}, identity, r.run)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.do(context.Background(), "k0") })
	<-r.started // the first call runs alone, in one of the two slots
	for i := 1; i <= 3; i++ {
		wg.Go(func() { _, _ = c.do(context.Background(), fmt.Sprint("k", i)) })
	}
	<-r.started // the next three leave together once the batch is full
	close(r.hold)
	wg.Wait()
	require.Equal(t, []int{1, 3}, r.sizes())
}

func TestCoalescerGathersWhileBusy(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), started: make(chan struct{}, 100)}
	c := newCoalescer(CoalesceConfig{MaxBatch: 4, MaxInFlight: 1}, identity, r.run)

	outs := make([]string, 10)
	var wg sync.WaitGroup
	wg.Go(func() { outs[0], _ = c.do(context.Background(), "k0") })
	<-r.started // the first batch holds the only slot
	for i := 1; i < 10; i++ {
		wg.Go(func() { outs[i], _ = c.do(context.Background(), fmt.Sprint("k", i)) })
	}
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 9
	}, time.Minute, time.Millisecond)
	close(r.hold)
	wg.Wait()

	require.Equal(t, []int{1, 4, 4, 1}, r.sizes(), "queued calls leave together, MaxBatch at a time")
	for i, out := range outs {
		require.Equal(t, fmt.Sprint("done:k", i), out, "each caller gets its own outcome")
	}
	require.Equal(t, CoalesceStats{Batches: 4, Items: 10}, c.stats())
}

func TestCoalescerFailingItemFailsAlone(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), started: make(chan struct{}, 100)}
	c := newCoalescer(CoalesceConfig{MaxBatch: 10, MaxInFlight: 1}, identity, r.run)
	items := []string{"a", "poison", "b", "c"}
	outs, errs := make([]string, len(items)), make([]error, len(items))
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.do(context.Background(), "first") }) // its outcome is not under test
	<-r.started
	for i, item := range items {
		wg.Go(func() { outs[i], errs[i] = c.do(context.Background(), item) })
	}
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == len(items)
	}, time.Minute, time.Millisecond)
	close(r.hold)
	wg.Wait()
	for i, item := range items {
		if item == "poison" {
			require.EqualError(t, errs[i], "the statement failed")
			continue
		}
		require.NoError(t, errs[i], item)
		require.Equal(t, "done:"+item, outs[i])
	}
	require.Equal(t, int64(1), c.stats().Fallbacks)
}

func TestCoalescerKeepsKeysApart(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), started: make(chan struct{}, 100)}
	c := newCoalescer(CoalesceConfig{MaxBatch: 10, MaxInFlight: 1}, func(s string) string { return s[:1] }, r.run)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.do(context.Background(), "z") }) // its outcome is not under test
	<-r.started
	for _, item := range []string{"a1", "a2", "b1", "a3"} {
		wg.Go(func() { _, _ = c.do(context.Background(), item) }) // the batches are checked
		time.Sleep(10 * time.Millisecond)                         // queue them in this order
	}
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 4
	}, time.Minute, time.Millisecond)
	close(r.hold)
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Equal(t, [][]string{{"z"}, {"a1", "b1"}, {"a2"}, {"a3"}}, r.batches, "a key is in a batch at most once")
}

func TestCoalescerSkipsCallersThatLeft(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), started: make(chan struct{}, 100)}
	c := newCoalescer(CoalesceConfig{MaxBatch: 10, MaxInFlight: 1}, identity, r.run)
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = c.do(context.Background(), "first") }) // its outcome is not under test
	<-r.started
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error)
	go func() {
		_, err := c.do(ctx, "gone")
		gone <- err
	}()
	wg.Go(func() { _, _ = c.do(context.Background(), "stays") }) // the batches are checked
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 2
	}, time.Minute, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-gone, context.Canceled)
	close(r.hold)
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Equal(t, [][]string{{"first"}, {"stays"}}, r.batches)
}

// BenchmarkCoalescer is the coalescer's own cost per call, around a batch
// runner that does nothing, with 64 concurrent callers.
func BenchmarkCoalescer(b *testing.B) {
	run := func(_ context.Context, items []int) ([]int, error) { return items, nil }
	c := newCoalescer(CoalesceConfig{MaxBatch: 500, MaxInFlight: 8}, func(i int) string { return fmt.Sprint(i) }, run)
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1))
			if out, err := c.do(context.Background(), i); err != nil || out != i {
				b.Fatalf("do(%d) = %d, %v", i, out, err)
			}
		}
	})
	stats := c.stats()
	b.ReportMetric(float64(stats.Items)/float64(max(stats.Batches, 1)), "calls/batch")
}

// BenchmarkCoalescerLone is the coalescer's own cost for a call that
// finds nothing running: the light-load case, where nothing is gathered.
func BenchmarkCoalescerLone(b *testing.B) {
	run := func(_ context.Context, items []int) ([]int, error) { return items, nil }
	c := newCoalescer(CoalesceConfig{MaxBatch: 500, MaxInFlight: 1}, func(i int) string { return fmt.Sprint(i) }, run)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if out, err := c.do(context.Background(), i); err != nil || out != i {
			b.Fatalf("do(%d) = %d, %v", i, out, err)
		}
	}
}
