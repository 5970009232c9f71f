package gotest_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
)

// closedAddr returns a loopback address that nothing listens on (a moment
// ago something did, so it is a valid, free port).
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

// callCodes records the status code of every RPC attempt a client makes.
type callCodes struct {
	mu    sync.Mutex
	codes []codes.Code
}

func (c *callCodes) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.codes = append(c.codes, status.Code(err))
	return err
}

func (c *callCodes) get() []codes.Code {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.codes)
}

func TestClient(t *testing.T) {
	noLeaks(t)

	t.Run("New requires transport credentials", func(t *testing.T) {
		t.Parallel()
		_, err := ledgerclient.New("127.0.0.1:7400")
		require.ErrorContains(t, err, "no transport security set")

		client, err := ledgerclient.New("127.0.0.1:7400", ledgerclient.WithInsecure())
		require.NoError(t, err)
		require.NoError(t, client.Close())
	})

	// Without the breaker and the budget (on by default: see
	// resilience_test.go), a call rides out an outage as long as ctx allows.
	t.Run("without breaker and budget, calls are retried while the server is unavailable, until it comes up", func(t *testing.T) {
		t.Parallel()
		bundle := ledgertest.Store(t, testConfig)
		addr := closedAddr(t)
		attempts := &callCodes{}
		client, err := ledgerclient.New(addr, ledgerclient.WithInsecure(),
			ledgerclient.WithoutCircuitBreaker(), ledgerclient.WithoutRetryBudget(),
			ledgerclient.WithDialOptions(grpc.WithUnaryInterceptor(attempts.interceptor)))
		require.NoError(t, err)
		defer func() { require.NoError(t, client.Close()) }()

		type outcome struct {
			result ledgerclient.Result
			err    error
		}
		done := make(chan outcome, 1)
		ctx, cancel := context.WithTimeout(t.Context(), 2*patience)
		defer cancel()
		go func() {
			result, err := client.Do(ctx, namespace, "k", value("receipt"))
			done <- outcome{result, err}
		}()

		// Start the server only once the client has failed and retried.
		require.Eventually(t, func() bool { return len(attempts.get()) >= 3 }, patience, 5*time.Millisecond)
		lis, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		serveTCP(t, bundle.Store, lis)

		got := <-done
		require.NoError(t, got.err)
		require.Equal(t, []byte("receipt"), got.result.Value)
		calls := attempts.get()
		require.Equal(t, codes.Unavailable, calls[0])
		require.Equal(t, codes.OK, calls[len(calls)-1])
		require.Equal(t, "completed", readEntry(t, bundle.Pool, "k").State)
	})

	t.Run("without breaker and budget, retries end with ctx, with an error that says why", func(t *testing.T) {
		t.Parallel()
		client, err := ledgerclient.New(closedAddr(t), ledgerclient.WithInsecure(),
			ledgerclient.WithoutCircuitBreaker(), ledgerclient.WithoutRetryBudget())
		require.NoError(t, err)
		defer func() { require.NoError(t, client.Close()) }()

		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err = client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: namespace, Key: "k"})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
		require.Less(t, time.Since(start), 2*time.Second+patience, "the retries ended with ctx")
	})
}
