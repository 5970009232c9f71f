package ledger_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

func ptr[T any](v T) *T { return &v }

// requireQuotaError requires a *QuotaError with the given quota, limit and
// usage.
func requireQuotaError(t *testing.T, err error, quota string, limit, usage int64) {
	t.Helper()
	require.ErrorIs(t, err, ledger.ErrQuotaExceeded)
	var quotaErr *ledger.QuotaError
	require.ErrorAs(t, err, &quotaErr)
	require.Equal(t, quota, quotaErr.Quota)
	require.Equal(t, limit, quotaErr.Limit)
	require.Equal(t, usage, quotaErr.Usage)
}

func (b testBundle) usage(t *testing.T, ns string) ledger.Usage {
	t.Helper()
	usage, err := b.store.NamespaceUsage(context.Background(), ns)
	require.NoError(t, err)
	return usage
}

// storedBytes recounts what a namespace's entries store, as the usage must
// sum it: every caller-written field, label keys and values included. It is
// written out here, not taken from the migration's entry_stored_bytes, so
// that it checks that definition too.
func (b testBundle) storedBytes(t *testing.T, ns string) int64 {
	t.Helper()
	var sum int64
	require.NoError(t, b.pool.QueryRow(context.Background(), `
		SELECT coalesce(sum(octet_length(key) + octet_length(owner) + octet_length(fingerprint)
		                    + coalesce(octet_length(checkpoint), 0) + coalesce(octet_length(result), 0)
		                    + coalesce(octet_length(error_code), 0) + coalesce(octet_length(error_message), 0)
		                    + (SELECT coalesce(sum(octet_length(k) + octet_length(v)), 0)
		                       FROM jsonb_each_text(metadata) AS m (k, v))), 0)
		FROM entries WHERE namespace = $1`, ns).Scan(&sum))
	return sum
}

func TestHeldLeasesQuota(t *testing.T) {
	ctx, b := setup(t)
	_, err := b.store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxHeldLeases: ptr[int64](3)}, "test")
	require.NoError(t, err)
	req := func(key, owner string) ledger.ReserveRequest {
		return ledger.ReserveRequest{Namespace: "q", Key: key, Owner: owner}
	}

	a := b.reserve(t, req("a", "w1"), ledger.Acquired)
	b.reserve(t, req("b", "w1"), ledger.Acquired)
	short := req("c", "w1")
	short.LeaseTTL = 100 * time.Millisecond
	b.reserve(t, short, ledger.Acquired)
	require.Equal(t, int64(3), b.usage(t, "q").HeldLeases)

	// At the quota: a fresh key is refused and leaves no trace.
	_, err = b.store.Reserve(ctx, req("d", "w2"))
	requireQuotaError(t, err, ledger.QuotaHeldLeases, 3, 4)
	_, err = b.store.Lookup(ctx, "q", "d")
	require.ErrorIs(t, err, ledger.ErrNotFound)
	require.Empty(t, b.events(t, "q", "d"))

	// What grants nothing is still answered: the holder's retry extends its
	// lease, another owner hears IN_PROGRESS.
	again := b.reserve(t, req("a", "w1"), ledger.Acquired)
	require.Equal(t, a.FencingToken, again.FencingToken)
	b.reserve(t, req("a", "w2"), ledger.InProgress)

	// A finished lease frees its place; a replay is answered at the quota.
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: "a", FencingToken: a.FencingToken, Result: []byte("ok")})
	require.NoError(t, err)
	b.reserve(t, req("d", "w2"), ledger.Acquired)
	b.reserve(t, req("a", "w3"), ledger.Completed)

	// An expired lease is not held: its place is free, and taking it over
	// is a grant like any other.
	b.waitExpired(t, "q", "c")
	require.Equal(t, int64(2), b.usage(t, "q").HeldLeases)
	b.reserve(t, req("e", "w2"), ledger.Acquired)
	_, err = b.store.Reserve(ctx, req("c", "w2"))
	requireQuotaError(t, err, ledger.QuotaHeldLeases, 3, 4)
	c := b.lookup(t, "q", "c")
	require.Equal(t, "w1", c.Owner, "the refused takeover changed nothing")
	require.Equal(t, int64(1), c.FencingToken)

	// Raising the quota lets the takeover through.
	_, err = b.store.UpdateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxHeldLeases: ptr[int64](4)}, "more")
	require.NoError(t, err)
	taken := b.reserve(t, req("c", "w2"), ledger.Acquired)
	require.True(t, taken.Takeover)
	require.Equal(t, int64(4), b.usage(t, "q").HeldLeases)
}

func TestHeldLeasesQuotaIsExactUnderConcurrency(t *testing.T) {
	ctx, b := setup(t)
	replica := ledgertest.Replica(t, ledgertest.Bundle{Store: b.store, Pool: b.pool}, testConfig)
	const quota, callers = 5, 40
	_, err := b.store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxHeldLeases: ptr[int64](quota)}, "test")
	require.NoError(t, err)

	var wg sync.WaitGroup
	outcomes := make([]error, callers)
	for i := range callers {
		store := b.store
		if i%2 == 1 {
			store = replica.Store // two replicas share the quota
		}
		wg.Go(func() {
			r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "q", Key: fmt.Sprint("k", i), Owner: "w"})
			if err == nil && r.Outcome != ledger.Acquired {
				err = fmt.Errorf("outcome %s", r.Outcome)
			}
			outcomes[i] = err
		})
	}
	wg.Wait()
	acquired := 0
	for _, err := range outcomes {
		if err == nil {
			acquired++
			continue
		}
		require.ErrorIs(t, err, ledger.ErrQuotaExceeded)
	}
	require.Equal(t, quota, acquired)
	require.Equal(t, quota, b.count(t, "entries"), "refused grants were rolled back")
	var reserved int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE kind = 'reserved'`).Scan(&reserved))
	require.Equal(t, quota, reserved)
}

func TestStoredBytesQuota(t *testing.T) {
	ctx, b := setup(t)
	_, err := b.store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{
		MaxStoredBytes: ptr[int64](104),
		Retention:      ptr(time.Millisecond),
	}, "test")
	require.NoError(t, err)
	require.Equal(t, ledger.Usage{StoredBytesCounted: true}, b.usage(t, "q"))
	complete := func(key string, size int) (ledger.Completion, error) {
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "q", Key: key, Owner: "w"}, ledger.Acquired)
		return b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: key, FencingToken: r.FencingToken, Result: bytes.Repeat([]byte("x"), size)})
	}

	// Each entry stores its key and owner (2 bytes here), then its result.
	_, err = complete("a", 60)
	require.NoError(t, err)
	require.Equal(t, int64(62), b.usage(t, "q").StoredBytes)

	// Over the quota: refused, the lease still held, nothing stored.
	_, err = complete("b", 50)
	requireQuotaError(t, err, ledger.QuotaStoredBytes, 104, 114)
	entry := b.lookup(t, "q", "b")
	require.Equal(t, ledger.StateLeased, entry.State)
	require.Nil(t, entry.Result)
	require.Equal(t, []string{"reserved"}, kinds(b.events(t, "q", "b")))
	require.Equal(t, int64(64), b.usage(t, "q").StoredBytes)

	// The holder may complete with what fits, and repeat that.
	done, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: "b", FencingToken: entry.FencingToken, Result: bytes.Repeat([]byte("y"), 40)})
	require.NoError(t, err)
	require.False(t, done.AlreadyCompleted)
	done, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: "b", FencingToken: entry.FencingToken, Result: bytes.Repeat([]byte("y"), 40)})
	require.NoError(t, err)
	require.True(t, done.AlreadyCompleted)
	require.Equal(t, int64(104), b.usage(t, "q").StoredBytes)

	// A full namespace refuses a new key; a stale token is still LEASE_LOST.
	_, err = b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "q", Key: "c", Owner: "w"})
	requireQuotaError(t, err, ledger.QuotaStoredBytes, 104, 106)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: "b", FencingToken: entry.FencingToken + 1, Result: []byte("z")})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)
	require.Equal(t, "refused_stale_token", b.events(t, "q", "b")[2].Kind, "the refusal is recorded")

	// A reset and a purge give the bytes back.
	_, err = b.store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: "q", Key: "a", Reason: "rerun"})
	require.NoError(t, err)
	require.Equal(t, int64(44), b.usage(t, "q").StoredBytes)
	purged, err := b.store.PurgeExpired(ctx, "q", "test")
	require.NoError(t, err)
	require.Equal(t, int64(1), purged)
	require.Equal(t, int64(2), b.usage(t, "q").StoredBytes, "the reset key keeps its key and owner")
	require.Equal(t, b.storedBytes(t, "q"), b.usage(t, "q").StoredBytes)
}

func TestStoredBytesQuotaIsExactUnderConcurrency(t *testing.T) {
	ctx, b := setup(t)
	replica := ledgertest.Replica(t, ledgertest.Bundle{Store: b.store, Pool: b.pool}, testConfig)
	// The 12 entries store 38 bytes (keys k0 to k11, owner w); 3 results
	// of 30 bytes fit beside them, not 4.
	_, err := b.store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: ptr[int64](140)}, "test")
	require.NoError(t, err)
	const callers = 12
	tokens := make([]int64, callers)
	for i := range callers {
		tokens[i] = b.reserve(t, ledger.ReserveRequest{Namespace: "q", Key: fmt.Sprint("k", i), Owner: "w"}, ledger.Acquired).FencingToken
	}

	var wg sync.WaitGroup
	outcomes := make([]error, callers)
	for i := range callers {
		store := b.store
		if i%2 == 1 {
			store = replica.Store
		}
		wg.Go(func() {
			_, outcomes[i] = store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: fmt.Sprint("k", i), FencingToken: tokens[i], Result: bytes.Repeat([]byte("r"), 30)})
		})
	}
	wg.Wait()
	completed := 0
	for _, err := range outcomes {
		if err == nil {
			completed++
			continue
		}
		require.ErrorIs(t, err, ledger.ErrQuotaExceeded)
	}
	require.Equal(t, 3, completed, "3 × 30 bytes fit in 140 - 38")
	require.Equal(t, int64(128), b.usage(t, "q").StoredBytes)
	require.Equal(t, int64(128), b.storedBytes(t, "q"))
}

func TestStoredBytesQuotaSetOnAnExistingNamespace(t *testing.T) {
	ctx, b := setup(t)
	for _, key := range []string{"a", "b", "c"} {
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "q", Key: key, Owner: "w"}, ledger.Acquired)
		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: key, FencingToken: r.FencingToken, Result: bytes.Repeat([]byte("x"), 10)})
		require.NoError(t, err)
	}
	require.False(t, b.usage(t, "q").StoredBytesCounted, "nothing is counted without a quota")
	require.Equal(t, 0, b.count(t, "namespace_usage"))

	// Setting the quota counts what is stored (3 × key, owner and result),
	// even over it.
	_, err := b.store.UpdateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: ptr[int64](25)}, "cap")
	require.NoError(t, err)
	require.Equal(t, ledger.Usage{StoredBytes: 36, StoredBytesCounted: true}, b.usage(t, "q"))
	_, err = b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "q", Key: "d", Owner: "w"})
	requireQuotaError(t, err, ledger.QuotaStoredBytes, 25, 38)

	// Changing it keeps the count; unsetting it stops counting.
	_, err = b.store.UpdateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: ptr[int64](39)}, "more")
	require.NoError(t, err)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "q", Key: "d", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: "d", FencingToken: r.FencingToken, Result: []byte("x")})
	require.NoError(t, err)
	require.Equal(t, int64(39), b.usage(t, "q").StoredBytes)
	_, err = b.store.UpdateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: ptr[int64](0)}, "no cap")
	require.NoError(t, err)
	require.Equal(t, 0, b.count(t, "namespace_usage"))
	require.Equal(t, ledger.Usage{}, b.usage(t, "q"))
}

func TestQuotaSettingsValidation(t *testing.T) {
	ctx, b := setup(t)
	_, err := b.store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxHeldLeases: ptr[int64](-1)}, "test")
	var validation *ledger.ValidationError
	require.ErrorAs(t, err, &validation)
	require.Equal(t, "settings.max_held_leases", validation.Field)
	_, err = b.store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: ptr[int64](-1)}, "test")
	require.ErrorAs(t, err, &validation)
	require.Equal(t, "settings.max_stored_bytes", validation.Field)
	require.Equal(t, 0, b.count(t, "namespaces"))
	require.NotErrorIs(t, err, ledger.ErrQuotaExceeded)
}

func kinds(events []event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Kind)
	}
	return out
}
