package gotest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestQuotas: a Do over the held-leases quota waits for a place (the server
// says when to ask again), and a result over the stored-bytes quota fails
// at once with ErrQuotaExceeded and its metadata, the lease still held.
func TestQuotas(t *testing.T) {
	noLeaks(t)
	conn, bundle := ledgertest.Server(t, testConfig)
	counting := &countingConn{ClientConnInterface: conn}
	client := ledgerclient.NewFromConn(counting)
	// Entries a (key and owner "holder") and b ("waiter") store 7 bytes
	// each, and b's result 1: 15 fit, not a 12-byte result for a.
	one, storedBytes := int64(1), int64(15)
	_, err := bundle.Store.CreateNamespace(context.Background(), namespace,
		ledger.NamespaceUpdate{MaxHeldLeases: &one, MaxStoredBytes: &storedBytes}, "test")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
	defer cancel()

	holder, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "a", Owner: "holder"})
	require.NoError(t, err)
	token := holder.GetAcquired().GetFencingToken()

	done := make(chan error, 1)
	go func() {
		_, err := client.Do(ctx, namespace, "b", value("b"), ledgerclient.WithOwner("waiter"))
		done <- err
	}()
	require.Eventually(t, func() bool { return counting.reserves.Load() >= 3 }, patience, 10*time.Millisecond,
		"the waiter's Reserve was refused and is being retried")
	select {
	case err := <-done:
		t.Fatalf("Do ended while the quota was full: %v", err)
	default:
	}
	require.Equal(t, "leased", readEntry(t, bundle.Pool, "a").State)

	// A result over the stored-bytes quota: refused, not retried.
	_, err = client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: namespace, Key: "a", FencingToken: token, Result: []byte("much too big")})
	require.ErrorIs(t, err, ledgerclient.ErrQuotaExceeded)
	var e *ledgerclient.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, map[string]string{"namespace": namespace, "quota": "max_stored_bytes", "limit": "15", "usage": "19", "request_id": e.RequestID}, e.Metadata)
	require.NotEmpty(t, e.RequestID)
	require.Equal(t, "leased", readEntry(t, bundle.Pool, "a").State)

	// The holder releases its place: the waiting Do gets it and completes.
	_, err = client.Release(ctx, &ledgerv1.ReleaseRequest{Namespace: namespace, Key: "a", FencingToken: token})
	require.NoError(t, err)
	require.NoError(t, <-done)
	b := readEntry(t, bundle.Pool, "b")
	require.Equal(t, "completed", b.State)
	require.Equal(t, []byte("b"), b.Result)
}
