package ledger_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestStoredBytesCountedByAStaleReplica: a replica that has not seen a new
// stored-bytes quota yet (its namespace cache is 10 s) gathers its callers'
// Reserves and Completes into the batch statements, and those count the
// bytes and refuse what goes over, exactly, as the singleton ones do.
func TestStoredBytesCountedByAStaleReplica(t *testing.T) {
	ctx, b := setup(t)
	stale := ledgertest.Replica(t, ledgertest.Bundle{Store: b.store, Pool: b.pool}, ledger.Config{})
	_, err := stale.Store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{}, "no quota yet")
	require.NoError(t, err)
	_, err = b.store.UpdateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxStoredBytes: ptr[int64](600)}, "cap")
	require.NoError(t, err)

	const callers = 40
	var wg sync.WaitGroup
	var unexpected otherErrors
	for i := range callers {
		wg.Go(func() {
			key := fmt.Sprintf("key-%02d", i)
			r, err := stale.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "q", Key: key, Owner: "w",
				Metadata: map[string]string{"n": fmt.Sprint(i)}})
			if err != nil {
				unexpected.add(err)
				return
			}
			_, err = stale.Store.Complete(ctx, ledger.CompleteRequest{Namespace: "q", Key: key, FencingToken: r.FencingToken,
				Result: []byte("result-of-" + key)})
			unexpected.add(err)
		})
	}
	wg.Wait()
	require.Empty(t, unexpected.errs)
	usage := b.usage(t, "q").StoredBytes
	require.Equal(t, b.storedBytes(t, "q"), usage)
	require.LessOrEqual(t, usage, int64(600))
	require.Positive(t, usage)
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
