package gotest_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/server"
)

// TestWorkStopsWhenTheLeaseCannotBeKept: when ledgerd becomes unreachable
// while the work runs, no heartbeat is acknowledged, and the work's context
// is canceled (cause matching ErrLeaseLost) before the lease runs out, so
// that the work does not go on while another worker may take the key over.
func TestWorkStopsWhenTheLeaseCannotBeKept(t *testing.T) {
	noLeaks(t)
	b := ledgertest.Store(t, testConfig)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := server.New(b.Store, server.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	stopServer := func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no drain: the server vanishes, as a crashed or partitioned one would
		srv.Shutdown(ctx)
		require.NoError(t, <-served)
	}

	client, err := ledgerclient.New(lis.Addr().String(), ledgerclient.WithInsecure())
	require.NoError(t, err)
	defer client.Close()

	const ttl = time.Second
	started := make(chan struct{})
	var cause error
	var canceledAfter time.Duration
	done := make(chan error, 1)
	go func() {
		_, err := client.Do(context.Background(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			close(started)
			start := time.Now()
			<-ctx.Done()
			canceledAfter, cause = time.Since(start), context.Cause(ctx)
			return nil, ctx.Err()
		}, ledgerclient.WithLeaseTTL(ttl), ledgerclient.WithHeartbeatInterval(100*time.Millisecond))
		done <- err
	}()
	<-started
	stopServer()

	select {
	case err := <-done:
		require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)
	case <-time.After(patience):
		t.Fatal("Do did not return: the work went on without a lease")
	}
	require.ErrorIs(t, cause, ledgerclient.ErrLeaseLost, "canceled by the client itself: the work's context has no deadline")
	t.Logf("the work was canceled %s after it started (lease TTL %s)", canceledAfter, ttl)
}
