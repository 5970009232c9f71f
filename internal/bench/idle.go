package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// How --idle holds its waiters.
const (
	// waitersPerConn is how many waiting Reserves share one connection:
	// half of ledgerd's default --grpc-max-concurrent-streams (1000), so
	// that none queues in the client.
	waitersPerConn = 500
	// heldKeysMax bounds the keys the waiters wait on, a hundred waiters or
	// more on each at 10,000.
	heldKeysMax = 100
	// idleMargin is how much longer than the interval the held leases and
	// the waits last, so that nothing moves while it is measured.
	idleMargin = 5 * time.Minute
	// idleSettle is left between the waiters' all waiting (or the start)
	// and the interval, for the burst of their arrival to pass.
	idleSettle = 2 * time.Second
	// waitersReadyTimeout bounds the wait for every waiter to be waiting.
	waitersReadyTimeout = 5 * time.Minute
	// waitersPoll is how often /metrics is read until they are.
	waitersPoll = 200 * time.Millisecond
)

// IdleResult is what --idle measured of one ledgerd side's processes over
// the interval: their CPU time and memory while nothing but the waiters
// (if any) was in flight.
type IdleResult struct {
	Side     string `json:"side"`
	Replicas int    `json:"replicas"`
	// PIDs are the processes measured.
	PIDs    []int   `json:"pids"`
	Seconds float64 `json:"seconds"`
	// Waiters is the number of Reserves held waiting (--idle-waiters);
	// WaitingAtStart and WaitingAtEnd are ledgerd's own count of them
	// (ledgerd_reserve_waiters, all replicas) when the interval began and
	// ended.
	Waiters        int   `json:"waiters"`
	WaitingAtStart int64 `json:"waiting_at_start"`
	WaitingAtEnd   int64 `json:"waiting_at_end"`
	// Calls is the number of RPCs the processes answered over the
	// interval (grpc_server_handled_total): 0 when nothing woke a waiter,
	// and none asked again.
	Calls int64 `json:"calls"`
	// CPUSeconds is the CPU time (user and system, /proc/PID/stat) the
	// processes used over the interval, all together; CPUPercentOfCore is
	// that over the interval, in percent of one core.
	CPUSeconds       float64 `json:"cpu_seconds"`
	CPUPercentOfCore float64 `json:"cpu_percent_of_core"`
	// RSSStartBytes and RSSEndBytes are the resident sets (VmRSS, summed)
	// when the interval began and ended; PeakRSSBytes the largest peak
	// (VmHWM) of one process since it started.
	RSSStartBytes int64 `json:"rss_start_bytes"`
	RSSEndBytes   int64 `json:"rss_end_bytes"`
	PeakRSSBytes  int64 `json:"peak_rss_bytes"`
}

// idleLedgerdArgs are the flags an --idle run with waiters adds to a
// started ledgerd: no cap on the waits of one principal (every waiter is
// the same principal here, as they would be many in production), and waits
// and leases that outlast the interval, as may the waiters' deadlines.
func idleLedgerdArgs(cfg Config) []string {
	if cfg.Idle <= 0 || cfg.IdleWaiters == 0 {
		return nil
	}
	longer := (cfg.Idle + idleMargin).String()
	return []string{
		"--max-waiting-reserves-per-principal", "0",
		"--max-wait", longer,
		"--max-lease-ttl", longer,
		"--max-request-timeout", longer,
	}
}

// idle measures the started ledgerd of each ledgerd side of cfg.Sides at
// rest, one side after the other, then finishes the report.
func (r *runner) idle(ctx context.Context, report *Report) (*Report, error) {
	for _, side := range []string{SideLedgerd, SideSecure} {
		f := r.fleets[side]
		if f == nil || !slices.Contains(r.cfg.Sides, side) {
			continue
		}
		result, err := r.idleFleet(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("--idle (%s): %w", side, err)
		}
		report.Idle = append(report.Idle, result)
	}
	return r.finish(report)
}

// idleFleet holds cfg.IdleWaiters Reserves waiting on f's ledgerd, waits
// until ledgerd counts them all, lets the burst settle, and measures the
// processes over cfg.Idle.
func (r *runner) idleFleet(ctx context.Context, f *fleet) (IdleResult, error) {
	result := IdleResult{Side: f.side, Replicas: len(f.replicas), Waiters: r.cfg.IdleWaiters}
	stopWaiters, err := r.startWaiters(ctx, f)
	if err != nil {
		return result, err
	}
	defer stopWaiters()
	if r.cfg.IdleWaiters > 0 {
		fmt.Fprintf(r.stderr, "ledgerbench: %s: waiting until ledgerd counts %d waiting Reserves\n", f.side, r.cfg.IdleWaiters)
		if err := r.awaitWaiters(ctx, f, int64(r.cfg.IdleWaiters)); err != nil {
			return result, err
		}
	}
	if err := sleep(ctx, idleSettle); err != nil {
		return result, err
	}
	fmt.Fprintf(r.stderr, "ledgerbench: %s: measuring ledgerd at rest for %s\n", f.side, r.cfg.Idle)
	var callsBefore int64
	if result.WaitingAtStart, callsBefore, err = r.waiting(ctx, f); err != nil {
		return result, err
	}
	before := make([]procStats, len(f.replicas))
	for i, rep := range f.replicas {
		before[i] = readProcStats(rep.ledgerd.PID())
	}
	start := time.Now()
	if err := sleep(ctx, r.cfg.Idle); err != nil {
		return result, err
	}
	elapsed := time.Since(start)
	for i, rep := range f.replicas {
		after := readProcStats(rep.ledgerd.PID())
		result.PIDs = append(result.PIDs, rep.ledgerd.PID())
		result.CPUSeconds += after.cpuSeconds - before[i].cpuSeconds
		result.RSSStartBytes += before[i].rssBytes
		result.RSSEndBytes += after.rssBytes
		result.PeakRSSBytes = max(result.PeakRSSBytes, after.peakRSSBytes)
	}
	// /metrics is read after the processes, so that serving it is not
	// counted in the interval.
	var callsAfter int64
	if result.WaitingAtEnd, callsAfter, err = r.waiting(ctx, f); err != nil {
		return result, err
	}
	result.Calls = callsAfter - callsBefore
	result.Seconds = elapsed.Seconds()
	result.CPUPercentOfCore = result.CPUSeconds / elapsed.Seconds() * 100
	return result, nil
}

// startWaiters reserves the held keys for an owner that never completes
// them, then starts cfg.IdleWaiters goroutines, each with a Reserve of one
// of them for another owner, waiting, on connections of their own; a
// waiter whose wait ends asks again. The returned function cancels them
// and waits until they have returned.
func (r *runner) startWaiters(ctx context.Context, f *fleet) (stop func(), err error) {
	n := r.cfg.IdleWaiters
	if n == 0 {
		return func() {}, nil
	}
	long := durationpb.New(r.cfg.Idle + idleMargin)
	prefix := fmt.Sprintf("idle-%s-%s-", r.runID, f.side)
	held := keySet{prefix: prefix, count: int64(min(n, heldKeysMax))}
	holder := r.session(f, prefix).client(0)
	for i := range held.count {
		resp, err := holder.Reserve(ctx, &ledgerv1.ReserveRequest{
			Namespace: r.cfg.Namespace, Key: held.key(i), Owner: "ledgerbench/holder", LeaseTtl: long,
		})
		if err != nil {
			return nil, fmt.Errorf("hold key %s: %w", held.key(i), err)
		}
		if resp.GetAcquired() == nil {
			return nil, unexpected("reserve of a key to hold", resp)
		}
	}
	var conns []*grpc.ClientConn
	var clients []ledgerv1.LedgerServiceClient
	for i := range (n + waitersPerConn - 1) / waitersPerConn * len(f.replicas) {
		addr := f.replicas[i%len(f.replicas)].ledgerd.Addr()
		conn, err := grpc.NewClient(addr, f.options...)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, err
		}
		conns = append(conns, conn)
		clients = append(clients, ledgerv1.NewLedgerServiceClient(conn))
	}
	waitCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var failures atomic.Int64
	for i := range n {
		client := clients[i%len(clients)]
		req := &ledgerv1.ReserveRequest{
			Namespace: r.cfg.Namespace, Key: held.key(int64(i) % held.count),
			Owner: fmt.Sprintf("ledgerbench/waiter/%d", i), WaitTimeout: long,
		}
		wg.Go(func() {
			for waitCtx.Err() == nil {
				// A deadline of its own, as a waiting client sets: without
				// one, ledgerd's --request-timeout (10s) would end the wait.
				callCtx, cancelCall := context.WithTimeout(waitCtx, r.cfg.Idle+idleMargin)
				_, err := client.Reserve(callCtx, req)
				cancelCall()
				if err != nil && waitCtx.Err() == nil {
					if failures.Add(1) == 1 {
						fmt.Fprintf(r.stderr, "ledgerbench: %s: a waiting Reserve failed: %v\n", f.side, err)
					}
					_ = sleep(waitCtx, time.Second) // do not spin on a refusal
				}
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
		for _, c := range conns {
			_ = c.Close()
		}
		if n := failures.Load(); n > 0 {
			fmt.Fprintf(r.stderr, "ledgerbench: %s: %d waiting Reserves failed\n", f.side, n)
		}
	}, nil
}

// awaitWaiters polls f's /metrics until its replicas count want waiting
// Reserves in all.
func (r *runner) awaitWaiters(ctx context.Context, f *fleet, want int64) error {
	deadline := time.Now().Add(waitersReadyTimeout)
	for {
		got, _, err := r.waiting(ctx, f)
		if err == nil && got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ledgerd counted %d waiting Reserves of %d after %s (last error: %w)", got, want, waitersReadyTimeout, err)
		}
		if err := sleep(ctx, waitersPoll); err != nil {
			return err
		}
	}
}

// waiting sums ledgerd_reserve_waiters, and the calls answered so far,
// over f's replicas.
func (r *runner) waiting(ctx context.Context, f *fleet) (waiters, calls int64, err error) {
	var errs []error
	for _, rep := range f.replicas {
		c, err := r.scrape(ctx, rep)
		errs = append(errs, err)
		waiters += c.waiters
		calls += int64(c.calls)
	}
	return waiters, calls, errors.Join(errs...)
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// printIdle writes what --idle measured.
func (r *Report) printIdle(w io.Writer) {
	if len(r.Idle) == 0 {
		return
	}
	fmt.Fprintln(w, "\nledgerd at rest (CPU from /proc/PID/stat over the interval; RSS: VmRSS at its start and end, VmHWM since start-up):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "side\treplicas\tseconds\twaiters\twaiting start/end\tcalls\tCPU s\t% of a core\tRSS MiB start/end\tpeak RSS MiB\t")
	for _, i := range r.Idle {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%d\t%d / %d\t%d\t%.3f\t%.2f\t%.1f / %.1f\t%.1f\t\n", i.Side, i.Replicas, i.Seconds, i.Waiters,
			i.WaitingAtStart, i.WaitingAtEnd, i.Calls, i.CPUSeconds, i.CPUPercentOfCore, mib(i.RSSStartBytes), mib(i.RSSEndBytes), mib(i.PeakRSSBytes))
	}
	_ = tw.Flush()
}
