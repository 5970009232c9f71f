package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

func TestNamespaces(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	ctx := ledger.WithCaller(context.Background(), "platform@ops")
	minute, hour := time.Minute, time.Hour
	size := 1024

	created, err := b.store.CreateNamespace(ctx, "payments", ledger.NamespaceUpdate{DefaultLeaseTTL: &minute, MaxResultBytes: &size}, "new team")
	require.NoError(t, err)
	require.Equal(t, time.Minute, created.Settings.DefaultLeaseTTL)
	require.Equal(t, 1024, created.Settings.MaxResultBytes)
	require.Equal(t, time.Hour, created.Settings.MaxLeaseTTL, "unset: the server's default")
	_, err = b.store.CreateNamespace(ctx, "payments", ledger.NamespaceUpdate{}, "again")
	require.ErrorIs(t, err, ledger.ErrAlreadyExists)
	_, err = b.store.CreateNamespace(ctx, "bad", ledger.NamespaceUpdate{MaxLeaseTTL: &minute, DefaultLeaseTTL: &hour}, "x")
	require.ErrorContains(t, err, "settings.max_lease_ttl")
	_, err = b.store.CreateNamespace(ctx, "nameless", ledger.NamespaceUpdate{}, "")
	require.ErrorContains(t, err, "reason")

	// The new settings apply to the hot path at once on this replica.
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "payments", Key: "k", Owner: "w"}, ledger.Acquired)
	require.Equal(t, time.Minute, r.LeaseTTL)
	_, err = b.store.Complete(context.Background(), ledger.CompleteRequest{Namespace: "payments", Key: "k", FencingToken: r.FencingToken, Result: make([]byte, 1025)})
	require.ErrorContains(t, err, "at most 1024 bytes")

	five := 5
	updated, err := b.store.UpdateNamespace(ctx, "payments", ledger.NamespaceUpdate{MaxAttempts: &five}, "cap retries")
	require.NoError(t, err)
	require.Equal(t, 5, updated.Settings.MaxAttempts)
	require.Equal(t, time.Minute, updated.Settings.DefaultLeaseTTL, "unset fields are kept")
	_, err = b.store.UpdateNamespace(ctx, "nope", ledger.NamespaceUpdate{}, "x")
	require.ErrorIs(t, err, ledger.ErrNotFound)
	negative := -1
	_, err = b.store.UpdateNamespace(ctx, "payments", ledger.NamespaceUpdate{MaxAttempts: &negative}, "x")
	require.ErrorContains(t, err, "settings.max_attempts")
	got, err := b.store.GetNamespace(ctx, "payments")
	require.NoError(t, err)
	require.Equal(t, 5, got.Settings.MaxAttempts, "the refused update changed nothing")

	for _, name := range []string{"a", "b", "c", "d"} {
		_, err := b.store.CreateNamespace(ctx, name, ledger.NamespaceUpdate{}, "test")
		require.NoError(t, err)
	}
	var names []string
	token := ""
	for {
		page, next, err := b.store.ListNamespaces(ctx, ledger.Page{Size: 2, Token: token})
		require.NoError(t, err)
		for _, ns := range page {
			names = append(names, ns.Name)
		}
		if next == "" {
			break
		}
		token = next
	}
	require.Equal(t, []string{"a", "b", "c", "d", "payments"}, names)

	events := b.events(t, "payments", "")
	require.Len(t, events, 2)
	require.Equal(t, "namespace_changed", events[0].Kind)
	require.Equal(t, "platform@ops", events[0].Caller)
	require.Equal(t, "new team", events[0].Detail["reason"])
	require.Equal(t, "cap retries", events[1].Detail["reason"])
	previous := events[1].Detail["previous"].(map[string]any)
	require.Equal(t, float64(0), previous["max_attempts"])
}
