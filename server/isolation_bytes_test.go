package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// storedRows is what a refused write must leave unchanged: the namespace's
// entries, every column, and its usage row.
func (b testBundle) storedRows(t *testing.T, ns string) (entries []string, usage int64) {
	t.Helper()
	ctx := context.Background()
	rows, err := b.ledger.Pool.Query(ctx, `SELECT to_jsonb(e)::text FROM entries e WHERE namespace = $1 ORDER BY key`, ns)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var row string
		require.NoError(t, rows.Scan(&row))
		entries = append(entries, row)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, b.ledger.Pool.QueryRow(ctx, `SELECT stored_bytes FROM namespace_usage WHERE namespace = $1`, ns).Scan(&usage))
	return entries, usage
}

// recount sums what a namespace's entries store, field by field, as the
// usage must: written out here, independently of the ledger's own
// definition.
func recount(t *testing.T, b ledgertest.Bundle, ns string) int64 {
	t.Helper()
	var sum int64
	require.NoError(t, b.Pool.QueryRow(context.Background(), `
		SELECT coalesce(sum(octet_length(key) + octet_length(owner) + octet_length(fingerprint)
		                    + coalesce(octet_length(checkpoint), 0) + coalesce(octet_length(result), 0)
		                    + coalesce(octet_length(error_code), 0) + coalesce(octet_length(error_message), 0)
		                    + (SELECT coalesce(sum(octet_length(k) + octet_length(v)), 0)
		                       FROM jsonb_each_text(metadata) AS m (k, v))), 0)
		FROM entries WHERE namespace = $1`, ns).Scan(&sum))
	return sum
}

// otherErrors collects, from goroutines, the errors other than a quota
// refusal, for the test to require none once they are done.
type otherErrors struct {
	mu   sync.Mutex
	errs []error
}

func (o *otherErrors) add(err error) {
	if err != nil && !errors.Is(err, ledger.ErrQuotaExceeded) {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.errs = append(o.errs, err)
	}
}

func usageOf(t *testing.T, b ledgertest.Bundle, ns string) int64 {
	t.Helper()
	usage, err := b.Store.NamespaceUsage(context.Background(), ns)
	require.NoError(t, err)
	require.True(t, usage.StoredBytesCounted)
	return usage.StoredBytes
}

// TestIsolationStoredBytesEveryField: max_stored_bytes counts every field a
// caller stores in an entry, not only results. For each field, a write that
// would take a 10-byte quota over is refused with QUOTA_EXCEEDED and
// changes no row; Release, which never grows the usage, still frees the key.
func TestIsolationStoredBytesEveryField(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	big := strings.Repeat("x", 20)
	// Each case runs in its own namespace holding key "k" leased by "w"
	// (2 bytes) and, for the takeover, released.
	cases := []struct {
		name     string
		released bool
		write    func(ns string, token int64) error
	}{
		{"key", false, func(ns string, _ int64) error {
			_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: big, Owner: "w"})
			return err
		}},
		{"owner", false, func(ns string, _ int64) error {
			_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "a", Owner: big})
			return err
		}},
		{"fingerprint", false, func(ns string, _ int64) error {
			_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "a", Owner: "w", Fingerprint: []byte(big)})
			return err
		}},
		{"metadata", false, func(ns string, _ int64) error {
			_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "a", Owner: "w", Metadata: map[string]string{"m": big}})
			return err
		}},
		{"takeover owner and metadata", true, func(ns string, _ int64) error {
			_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "k", Owner: "w2", Metadata: map[string]string{"m": big}})
			return err
		}},
		{"holder's metadata", false, func(ns string, _ int64) error {
			_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "k", Owner: "w", Metadata: map[string]string{"m": big}})
			return err
		}},
		{"checkpoint", false, func(ns string, token int64) error {
			_, err := b.client.Heartbeat(ctx, &ledgerv1.HeartbeatRequest{Namespace: ns, Key: "k", FencingToken: token, Checkpoint: []byte(big)})
			return err
		}},
		{"result", false, func(ns string, token int64) error {
			_, err := b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: ns, Key: "k", FencingToken: token, Result: []byte(big)})
			return err
		}},
		{"fail message", false, func(ns string, token int64) error {
			_, err := b.client.Fail(ctx, &ledgerv1.FailRequest{Namespace: ns, Key: "k", FencingToken: token,
				Error: &ledgerv1.WorkError{Message: big}, Retryable: true})
			return err
		}},
		{"fail code", false, func(ns string, token int64) error {
			_, err := b.client.Fail(ctx, &ledgerv1.FailRequest{Namespace: ns, Key: "k", FencingToken: token,
				Error: &ledgerv1.WorkError{Code: big, Message: "m"}})
			return err
		}},
	}
	for i, tc := range cases {
		ns := fmt.Sprint("q", i)
		quota := int64(10)
		_, err := b.ledger.Store.CreateNamespace(ctx, ns, ledger.NamespaceUpdate{MaxStoredBytes: &quota}, "test")
		require.NoError(t, err)
		r, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "k", Owner: "w", LeaseTtl: durationpb.New(time.Hour)})
		require.NoError(t, err)
		token := r.GetAcquired().GetFencingToken()
		if tc.released {
			_, err = b.client.Release(ctx, &ledgerv1.ReleaseRequest{Namespace: ns, Key: "k", FencingToken: token})
			require.NoError(t, err)
		}
		entries, usage := b.storedRows(t, ns)
		require.Equal(t, int64(2), usage, tc.name)

		err = tc.write(ns, token)
		requireReason(t, err, codes.ResourceExhausted, "QUOTA_EXCEEDED")
		after, usageAfter := b.storedRows(t, ns)
		require.Equal(t, entries, after, "%s: the refused write changed the entries", tc.name)
		require.Equal(t, usage, usageAfter, tc.name)
		require.Equal(t, recount(t, b.ledger, ns), usageAfter, tc.name)

		if !tc.released {
			_, err = b.client.Release(ctx, &ledgerv1.ReleaseRequest{Namespace: ns, Key: "k", FencingToken: token})
			require.NoError(t, err, "%s: Release is never refused", tc.name)
		}
	}
}

// TestIsolationStoredBytesMatchRecount: after a mixed sequence of every
// write (reserve with labels and a fingerprint, heartbeats with
// checkpoints, a retryable and a permanent failure, completions, a
// takeover, a reset, a purge, and the batches), the usage equals a recount
// of the entries.
func TestIsolationStoredBytesMatchRecount(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	quota := int64(1 << 20)
	_, err := b.ledger.Store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: &quota}, "test")
	require.NoError(t, err)
	exact := func(step string) {
		t.Helper()
		require.Equal(t, recount(t, b.ledger, "q"), usageOf(t, b.ledger, "q"), "after %s", step)
	}
	reserve := func(key, owner string, metadata map[string]string) int64 {
		t.Helper()
		r, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "q", Key: key, Owner: owner,
			Fingerprint: []byte("fp-" + key), Metadata: metadata, LeaseTtl: durationpb.New(time.Hour)})
		require.NoError(t, err)
		require.NotNil(t, r.GetAcquired(), "%s: %v", key, r)
		return r.GetAcquired().GetFencingToken()
	}

	a := reserve("a", "worker-1", map[string]string{"team": "ingest", "run": "42"})
	c := reserve("c", "worker-1", nil)
	exact("reserve")
	for _, checkpoint := range []string{"step-1", "step-two-longer", "", "s3"} {
		_, err := b.client.Heartbeat(ctx, &ledgerv1.HeartbeatRequest{Namespace: "q", Key: "a", FencingToken: a, Checkpoint: []byte(checkpoint)})
		require.NoError(t, err)
		exact("heartbeat " + checkpoint)
	}
	_, err = b.client.Fail(ctx, &ledgerv1.FailRequest{Namespace: "q", Key: "a", FencingToken: a,
		Error: &ledgerv1.WorkError{Code: "timeout", Message: "upstream timed out"}, Retryable: true})
	require.NoError(t, err)
	exact("retryable fail")
	a = reserve("a", "worker-two", map[string]string{"team": "ingest"})
	exact("takeover")
	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "q", Key: "a", FencingToken: a, Result: []byte("the result")})
	require.NoError(t, err)
	exact("complete after a failure")
	_, err = b.client.Fail(ctx, &ledgerv1.FailRequest{Namespace: "q", Key: "c", FencingToken: c,
		Error: &ledgerv1.WorkError{Message: "bad input"}})
	require.NoError(t, err)
	exact("permanent fail")

	batch, err := b.client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "q", Owner: "batcher",
		LeaseTtl: durationpb.New(time.Hour), Items: []*ledgerv1.ReserveBatchItem{
			{Key: "b1", Metadata: map[string]string{"k": "v"}}, {Key: "b2", Fingerprint: []byte("f")},
		}})
	require.NoError(t, err)
	exact("reserve batch")
	var items []*ledgerv1.CompleteBatchItem
	for i, result := range batch.GetResults() {
		items = append(items, &ledgerv1.CompleteBatchItem{Key: fmt.Sprint("b", i+1),
			FencingToken: result.GetReserved().GetAcquired().GetFencingToken(), Result: []byte("r")})
	}
	_, err = b.client.CompleteBatch(ctx, &ledgerv1.CompleteBatchRequest{Namespace: "q", Items: items})
	require.NoError(t, err)
	exact("complete batch")

	_, err = b.ledger.Store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: "q", Key: "a", Reason: "rerun"})
	require.NoError(t, err)
	exact("reset")
	short := time.Millisecond
	_, err = b.ledger.Store.UpdateNamespace(ctx, "q", ledger.NamespaceUpdate{Retention: &short}, "purge")
	require.NoError(t, err)
	r := reserve("d", "w", nil)
	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "q", Key: "d", FencingToken: r, Result: []byte("gone soon")})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		purged, err := b.ledger.Store.PurgeExpired(ctx, "q", "test")
		require.NoError(t, err)
		return purged > 0
	}, time.Minute, 5*time.Millisecond)
	exact("purge")
	require.Equal(t, 4, b.countEntries(t, "q"), "a, b1, b2 and c are kept; c failed for good before the retention changed")
}

func (b testBundle) countEntries(t *testing.T, ns string) int {
	t.Helper()
	var n int
	require.NoError(t, b.ledger.Pool.QueryRow(context.Background(), `SELECT count(*) FROM entries WHERE namespace = $1`, ns).Scan(&n))
	return n
}

// TestIsolationStoredBytesExactAcrossReplicas: two stores over one
// database write concurrently into one namespace — new keys, checkpoints
// raced by two heartbeats of one holder, results — and the usage stays
// equal to a recount, never above the quota.
func TestIsolationStoredBytesExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	replica := ledgertest.Replica(t, b.ledger, ledger.Config{})
	quota := int64(4000)
	_, err := b.ledger.Store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: &quota}, "test")
	require.NoError(t, err)
	stores := []*ledger.Store{b.ledger.Store, replica.Store}

	const workers = 8
	var wg sync.WaitGroup
	var unexpected otherErrors
	for w := range workers {
		wg.Go(func() {
			for i := range 10 {
				key := fmt.Sprintf("k%d-%d", w, i)
				r, err := stores[(w+i)%2].Reserve(ctx, ledger.ReserveRequest{Namespace: "q", Key: key, Owner: fmt.Sprint("w", w),
					Metadata: map[string]string{"i": fmt.Sprint(i)}})
				if err != nil {
					unexpected.add(err)
					continue
				}
				// Two heartbeats of one holder race on the checkpoint.
				var beats sync.WaitGroup
				for s, store := range stores {
					beats.Go(func() {
						_, err := store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "q", Key: key, FencingToken: r.FencingToken,
							Checkpoint: []byte(strings.Repeat("c", 5+10*s+i))})
						unexpected.add(err)
					})
				}
				beats.Wait()
				_, err = stores[i%2].Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: key, FencingToken: r.FencingToken,
					Result: []byte(strings.Repeat("r", 3*i))})
				unexpected.add(err)
			}
		})
	}
	wg.Wait()
	require.Empty(t, unexpected.errs)
	usage := usageOf(t, b.ledger, "q")
	require.Equal(t, recount(t, b.ledger, "q"), usage)
	require.LessOrEqual(t, usage, quota)
}

// serveWith starts a server over the auth bundle's store with cfg (its
// Logger and Auth filled in) and returns a client of it.
func serveWith(t *testing.T, b authBundle, cfg server.Config) ledgerv1.LedgerServiceClient {
	t.Helper()
	cfg.Logger, cfg.Auth = slog.New(slog.DiscardHandler), b.auth
	srv, err := server.New(b.ledger.Store, cfg)
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() { srv.Shutdown(context.Background()); require.NoError(t, <-served) })
	return ledgerv1.NewLedgerServiceClient(ledgertest.Dial(t, lis))
}

// TestIsolationBatchCostsOneTokenPerItem: a batch takes one rate-limit
// token per item from the principal's and the namespace's buckets. A batch
// larger than a burst, which could never be admitted, is refused with
// INVALID_ARGUMENT naming the burst and the size (not RESOURCE_EXHAUSTED,
// which clients retry), and changes nothing; before, it cost only the
// burst, so one principal could push any number of items through.
func TestIsolationBatchCostsOneTokenPerItem(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	// The worker of "ns" works in "ns2" too.
	_, err := b.ledger.Store.GrantRole(context.Background(), ledger.RoleBinding{Principal: "svc-ns", NamespacePattern: "ns2", Role: ledger.RoleWorker}, "test")
	require.NoError(t, err)
	require.NoError(t, b.auth.Load(context.Background()))
	slow := 0.001 // no refill during the test
	client := serveWith(t, b, server.Config{RateLimits: server.RateLimits{
		PerPrincipal: server.Rate{PerSecond: slow, Burst: 8},
		PerNamespace: server.Rate{PerSecond: slow, Burst: 5},
	}})
	ctx := as(context.Background(), b.tokens["worker"])
	items := func(n int) []*ledgerv1.ReserveBatchItem {
		var out []*ledgerv1.ReserveBatchItem
		for i := range n {
			out = append(out, &ledgerv1.ReserveBatchItem{Key: fmt.Sprint("k", n, "-", i)})
		}
		return out
	}

	for _, tc := range []struct {
		ns    string
		items int
		burst string
	}{{"ns", 6, "per-namespace burst of 5"}, {"ns2", 9, "per-principal burst of 8"}} {
		before := counts(t, b.ledger)
		_, err := client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: tc.ns, Owner: "w", Items: items(tc.items)})
		st := requireReason(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
		require.Contains(t, st.Message(), fmt.Sprintf("%d items exceed the %s", tc.items, tc.burst))
		require.Equal(t, before, counts(t, b.ledger), "a refused batch changes nothing")
	}

	// A batch of exactly the namespace's burst passes, and takes it all.
	_, err = client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "ns", Owner: "w", Items: items(5)})
	require.NoError(t, err)
	_, err = client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k5-0"})
	requireReason(t, err, codes.ResourceExhausted, "RATE_LIMITED")
	// The principal has 3 of its 8 left: a batch of 4 elsewhere waits.
	_, err = client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "ns2", Owner: "w", Items: items(4)})
	requireReason(t, err, codes.ResourceExhausted, "RATE_LIMITED")
	_, err = client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "ns2", Owner: "w", Items: items(3)})
	require.NoError(t, err)
}

// TestIsolationWaitingReservesPerPrincipal: one principal holds at most
// MaxWaitingReservesPerPrincipal waiting Reserves on a replica; beyond it,
// its Reserves answer at once (IN_PROGRESS) instead of waiting. Another
// principal's waits are unaffected, and a wait that ends — by the caller's
// cancelation too — gives its slot back.
func TestIsolationWaitingReservesPerPrincipal(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	metrics := server.NewMetrics(b.ledger.Store, server.MetricsConfig{})
	client := serveWith(t, b, server.Config{MaxWaitingReservesPerPrincipal: 2, Metrics: metrics})
	listenCtx, stopListening := context.WithCancel(context.Background())
	listened := make(chan error, 1)
	go func() { listened <- b.ledger.Store.Listen(listenCtx) }()
	t.Cleanup(func() { stopListening(); require.NoError(t, <-listened) })
	worker, other := as(context.Background(), b.tokens["worker"]), as(context.Background(), b.tokens["other-worker"])
	hold := func(ctx context.Context, ns, key string) int64 {
		r, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: key, Owner: "holder", LeaseTtl: durationpb.New(time.Hour)})
		require.NoError(t, err)
		return r.GetAcquired().GetFencingToken()
	}
	waitFor := func(ctx context.Context, ns, key, owner string) chan *ledgerv1.ReserveResponse {
		done := make(chan *ledgerv1.ReserveResponse, 1)
		go func() {
			r, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: key, Owner: owner, WaitTimeout: durationpb.New(time.Minute)})
			if err != nil {
				r = nil
			}
			done <- r
		}()
		return done
	}
	waiters := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return b.ledger.Store.Waiters() == n }, time.Minute, 5*time.Millisecond)
	}

	token := hold(worker, "ns", "k")
	otherToken := hold(other, "other", "k")
	canceled, cancel := context.WithCancel(worker)
	first := waitFor(canceled, "ns", "k", "w1")
	second := waitFor(worker, "ns", "k", "w2")
	waiters(2)

	// At its cap, the principal is answered at once, well before the
	// minute its wait asked for.
	start := time.Now()
	r, err := client.Reserve(worker, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w3", WaitTimeout: durationpb.New(time.Minute)})
	require.NoError(t, err)
	require.NotNil(t, r.GetInProgress(), "%v", r)
	require.Less(t, time.Since(start), 30*time.Second, "the Reserve over the cap did not wait")
	families, err := metrics.Registry().Gather()
	require.NoError(t, err)
	declined := -1.0
	for _, family := range families {
		if family.GetName() == "ledgerd_reserve_waits_declined_total" {
			declined = family.GetMetric()[0].GetCounter().GetValue()
		}
	}
	require.Equal(t, 1.0, declined)

	// Another principal still waits, and gets the key when it frees.
	theirs := waitFor(other, "other", "k", "o1")
	waiters(3)
	_, err = client.Release(other, &ledgerv1.ReleaseRequest{Namespace: "other", Key: "k", FencingToken: otherToken})
	require.NoError(t, err)
	require.NotNil(t, (<-theirs).GetAcquired(), "the other principal's wait succeeded")

	// A canceled wait gives its slot back: the principal may wait again.
	cancel()
	<-first
	waiters(1)
	third := waitFor(worker, "ns", "k", "w4")
	waiters(2)

	// Waits that end give theirs back too.
	_, err = client.Complete(worker, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: token, Result: []byte("r")})
	require.NoError(t, err)
	require.NotNil(t, (<-second).GetCompleted())
	require.NotNil(t, (<-third).GetCompleted())
	waiters(0)
	token = hold(worker, "ns", "k2")
	again := []chan *ledgerv1.ReserveResponse{waitFor(worker, "ns", "k2", "w5"), waitFor(worker, "ns", "k2", "w6")}
	waiters(2)
	_, err = client.Complete(worker, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k2", FencingToken: token, Result: []byte("r")})
	require.NoError(t, err)
	for _, done := range again {
		require.NotNil(t, (<-done).GetCompleted())
	}
}
