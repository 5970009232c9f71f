package gotest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// replica is a ledgerd serving on loopback TCP until stopped, counting the
// unary calls it served and the user agents they carried.
type replica struct {
	srv    *server.Server
	addr   string
	served chan error
	calls  atomic.Int64

	mu         sync.Mutex
	userAgents []string
}

// startReplica serves a ledgerd over store on addr ("127.0.0.1:0" for any
// port) until the test's cleanup or stop.
func startReplica(t *testing.T, store *ledger.Store, addr string) *replica {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	r := &replica{addr: lis.Addr().String(), served: make(chan error, 1)}
	count := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		r.calls.Add(1)
		md, _ := metadata.FromIncomingContext(ctx)
		r.mu.Lock()
		r.userAgents = append(r.userAgents, md.Get("user-agent")...)
		r.mu.Unlock()
		return handler(ctx, req)
	}
	r.srv, err = server.New(store, server.Config{
		Logger:        slog.New(slog.DiscardHandler),
		ServerOptions: []grpc.ServerOption{grpc.ChainUnaryInterceptor(count)},
	})
	require.NoError(t, err)
	go func() { r.served <- r.srv.Serve(lis) }()
	t.Cleanup(r.stop)
	return r
}

// stop shuts the replica down at once (no drain), as a crash would; it may
// be called again.
func (r *replica) stop() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.srv.Shutdown(ctx)
}

func (r *replica) agents() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.userAgents...)
}

func TestFallback(t *testing.T) {
	noLeaks(t)

	t.Run("fail closed (default): the breaker opens, the work does not run, the error is typed", func(t *testing.T) {
		t.Parallel()
		var transitions []string
		var mu sync.Mutex
		client, err := ledgerclient.New(closedAddr(t), ledgerclient.WithInsecure(),
			ledgerclient.WithCircuitBreaker(ledgerclient.BreakerConfig{
				FailureThreshold: 2, OpenFor: patience,
				OnStateChange: func(from, to ledgerclient.BreakerState, lastErr error) {
					mu.Lock()
					defer mu.Unlock()
					transitions = append(transitions, fmt.Sprintf("%s->%s", from, to))
				},
			}))
		require.NoError(t, err)
		defer func() { require.NoError(t, client.Close()) }()

		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		_, err = client.Do(ctx, namespace, "k", mustNotRun(t))
		require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
		require.ErrorIs(t, err, ledgerclient.ErrCircuitOpen)
		var open *ledgerclient.CircuitOpenError
		require.ErrorAs(t, err, &open)
		require.ErrorIs(t, open.LastError, ledgerclient.ErrUnavailable)
		require.Contains(t, err.Error(), "circuit open since")
		require.NoError(t, ctx.Err(), "failed fast, not at the deadline")

		// Now the breaker is open: the next call is refused without an attempt.
		before := client.Stats()
		_, err = client.Do(ctx, namespace, "k2", mustNotRun(t))
		require.ErrorIs(t, err, ledgerclient.ErrCircuitOpen)
		after := client.Stats()
		require.Equal(t, ledgerclient.BreakerOpen, after.BreakerState)
		require.Equal(t, int64(1), after.BreakerOpens)
		require.Equal(t, before.Calls+1, after.Calls)
		require.Equal(t, before.Retries, after.Retries)
		mu.Lock()
		require.Equal(t, []string{"closed->open"}, transitions)
		mu.Unlock()
	})

	t.Run("fail open: the work runs unguarded, and its result is recorded once the ledger is back", func(t *testing.T) {
		t.Parallel()
		bundle := ledgertest.Store(t, testConfig)
		addr := closedAddr(t)
		var runs, recorded []string
		var mu sync.Mutex
		// A breaker open for less than the retries' backoff makes every
		// retry a half-open probe, so the attempt limit is what ends the
		// Reserve here (with the defaults, the breaker's refusal does).
		client, err := ledgerclient.New(addr, ledgerclient.WithInsecure(),
			ledgerclient.WithCircuitBreaker(ledgerclient.BreakerConfig{FailureThreshold: 2, OpenFor: 50 * time.Millisecond}),
			ledgerclient.WithMaxAttempts(2),
			ledgerclient.WithFallback(ledgerclient.FailOpen),
			ledgerclient.WithFailOpenHooks(ledgerclient.FailOpenHooks{
				OnRun: func(ns, key string, cause error) {
					mu.Lock()
					defer mu.Unlock()
					runs = append(runs, key)
				},
				OnRecorded: func(ns, key string, outcome ledgerclient.FailOpenOutcome, err error) {
					mu.Lock()
					defer mu.Unlock()
					recorded = append(recorded, key+"="+string(outcome))
				},
			}))
		require.NoError(t, err)
		defer func() { require.NoError(t, client.Close()) }()

		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		result, err := client.Do(ctx, namespace, "k", func(ctx context.Context) ([]byte, error) {
			lease, ok := ledgerclient.LeaseFromContext(ctx)
			require.True(t, ok)
			require.True(t, lease.Unguarded)
			require.Zero(t, lease.FencingToken)
			return []byte("unguarded receipt"), nil
		})
		require.NoError(t, err)
		require.True(t, result.Unguarded)
		require.Equal(t, []byte("unguarded receipt"), result.Value)

		// A work that fails under fail-open is not recorded.
		_, err = client.Do(ctx, namespace, "broken", func(context.Context) ([]byte, error) {
			return nil, errors.New("downstream said no")
		})
		require.ErrorContains(t, err, "downstream said no")

		stats := client.Stats()
		require.Equal(t, int64(2), stats.FailOpenRuns)
		require.Equal(t, int64(1), stats.FailOpenPending)

		startReplica(t, bundle.Store, addr)
		require.NoError(t, client.Flush(ctx))
		e := readEntry(t, bundle.Pool, "k")
		require.Equal(t, "completed", e.State)
		require.Equal(t, []byte("unguarded receipt"), e.Result)
		_, err = readEntryErr(bundle, "broken")
		require.Error(t, err, "the failed unguarded work left no entry")

		stats = client.Stats()
		require.Equal(t, int64(1), stats.FailOpenRecorded)
		require.Zero(t, stats.FailOpenPending)
		mu.Lock()
		require.Equal(t, []string{"k", "broken"}, runs)
		require.Equal(t, []string{"k=recorded"}, recorded)
		mu.Unlock()
	})

	t.Run("fail open never overwrites a result another worker recorded meanwhile", func(t *testing.T) {
		t.Parallel()
		bundle := ledgertest.Store(t, testConfig)
		addr := closedAddr(t)
		var outcomes []ledgerclient.FailOpenOutcome
		var mu sync.Mutex
		client, err := ledgerclient.New(addr, ledgerclient.WithInsecure(),
			ledgerclient.WithCircuitBreaker(ledgerclient.BreakerConfig{FailureThreshold: 1, OpenFor: 50 * time.Millisecond}),
			ledgerclient.WithMaxAttempts(2), // as above
			ledgerclient.WithFailOpenHooks(ledgerclient.FailOpenHooks{
				OnRecorded: func(_, _ string, outcome ledgerclient.FailOpenOutcome, _ error) {
					mu.Lock()
					defer mu.Unlock()
					outcomes = append(outcomes, outcome)
				},
			}))
		require.NoError(t, err)
		defer func() { require.NoError(t, client.Close()) }()

		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		result, err := client.Do(ctx, namespace, "k", value("ours"), ledgerclient.WithDoFallback(ledgerclient.FailOpen))
		require.NoError(t, err)
		require.True(t, result.Unguarded)

		// Another worker, which reaches the ledger, completes the key first.
		other := startReplica(t, bundle.Store, "127.0.0.1:0")
		otherClient, err := ledgerclient.New(other.addr, ledgerclient.WithInsecure())
		require.NoError(t, err)
		defer func() { require.NoError(t, otherClient.Close()) }()
		_, err = otherClient.Do(ctx, namespace, "k", value("theirs"))
		require.NoError(t, err)

		startReplica(t, bundle.Store, addr)
		require.NoError(t, client.Flush(ctx))
		require.Equal(t, []byte("theirs"), readEntry(t, bundle.Pool, "k").Result)
		require.Equal(t, int64(1), client.Stats().FailOpenDiscarded)
		mu.Lock()
		require.Equal(t, []ledgerclient.FailOpenOutcome{ledgerclient.FailOpenDiscardedCompleted}, outcomes)
		mu.Unlock()
	})

	t.Run("fail open does not apply when the ledger answered", func(t *testing.T) {
		t.Parallel()
		bundle := ledgertest.Store(t, testConfig)
		r := startReplica(t, bundle.Store, "127.0.0.1:0")
		client, err := ledgerclient.New(r.addr, ledgerclient.WithInsecure(), ledgerclient.WithFallback(ledgerclient.FailOpen))
		require.NoError(t, err)
		defer func() { require.NoError(t, client.Close()) }()
		_, err = client.Do(t.Context(), namespace, "k", func(context.Context) ([]byte, error) {
			return nil, ledgerclient.Permanent(errors.New("bad input"))
		})
		require.Error(t, err)
		_, err = client.Do(t.Context(), namespace, "k", mustNotRun(t))
		require.ErrorIs(t, err, ledgerclient.ErrFailed)
		require.Zero(t, client.Stats().FailOpenRuns)
	})
}

// readEntryErr is readEntry for a key that may be absent.
func readEntryErr(bundle ledgertest.Bundle, key string) (string, error) {
	var state string
	err := bundle.Pool.QueryRow(context.Background(),
		`SELECT state FROM entries WHERE namespace = $1 AND key = $2`, namespace, key).Scan(&state)
	return state, err
}

// TestReplicas: a client of two replicas balances over them, keeps away
// from one that reports NOT_SERVING, and rides out one stopped mid-run;
// every Do succeeds and every row is there.
func TestReplicas(t *testing.T) {
	noLeaks(t)
	url := pgtest.Schema(t)
	storeA := ledgertest.StoreAt(t, url, testConfig).Store
	storeB := ledgertest.StoreAt(t, url, testConfig)
	a := startReplica(t, storeA, "127.0.0.1:0")
	b := startReplica(t, storeB.Store, "127.0.0.1:0")

	// The defaults ride out the stop: the breaker counts the calls in
	// flight on the stopped replica, which fail together, once, and the
	// retry budget (100 tokens) retries every one of them.
	client, err := ledgerclient.NewMulti([]string{a.addr, b.addr}, ledgerclient.WithInsecure())
	require.NoError(t, err)
	defer func() { require.NoError(t, client.Close()) }()
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()

	do := func(key string) {
		t.Helper()
		result, err := client.Do(ctx, namespace, key, value("r-"+key))
		require.NoError(t, err)
		require.False(t, result.Unguarded)
	}
	// Both serve: the calls are spread over both.
	for i := range 20 {
		do(fmt.Sprintf("both-%d", i))
	}
	require.Positive(t, a.calls.Load())
	require.Positive(t, b.calls.Load())

	// A goes NOT_SERVING (lame duck): once the client has seen it, A gets
	// no more calls.
	a.srv.LameDuck()
	require.Eventually(t, func() bool {
		before := a.calls.Load()
		for i := range 4 {
			do(fmt.Sprintf("probe-%d-%d", before, i))
		}
		return a.calls.Load() == before
	}, patience, 10*time.Millisecond)
	aCalls := a.calls.Load()
	for i := range 20 {
		do(fmt.Sprintf("lame-%d", i))
	}
	require.Equal(t, aCalls, a.calls.Load(), "a NOT_SERVING replica got calls")

	// A serves again (restarted on its address), then B stops mid-run.
	a.stop()
	a2 := startReplica(t, storeA, a.addr)
	require.Eventually(t, func() bool { // the client has reconnected to A
		do(fmt.Sprintf("back-%d", a2.calls.Load()))
		return a2.calls.Load() > 0
	}, patience, 10*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		if i == 10 {
			b.stop()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := client.Do(ctx, namespace, fmt.Sprintf("failover-%d", i), value("ok"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Positive(t, a2.calls.Load())
	var completed int
	require.NoError(t, storeB.Pool.QueryRow(ctx,
		`SELECT count(*) FROM entries WHERE namespace = $1 AND key LIKE 'failover-%' AND state = 'completed'`, namespace).Scan(&completed))
	require.Equal(t, 40, completed)
}

// TestUserAgent: the server sees "ledgerd-go/<Version>".
func TestUserAgent(t *testing.T) {
	noLeaks(t)
	bundle := ledgertest.Store(t, testConfig)
	r := startReplica(t, bundle.Store, "127.0.0.1:0")
	client, err := ledgerclient.New(r.addr, ledgerclient.WithInsecure())
	require.NoError(t, err)
	defer func() { require.NoError(t, client.Close()) }()
	_, err = client.Do(t.Context(), namespace, "k", value("v"))
	require.NoError(t, err)
	agents := r.agents()
	require.NotEmpty(t, agents)
	require.True(t, strings.HasPrefix(agents[0], "ledgerd-go/"+ledgerclient.Version+" "), "user agent %q", agents[0])
}
