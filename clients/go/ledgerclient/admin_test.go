package ledgerclient_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
)

// acquire reserves key for owner and returns the fencing token.
func acquire(t *testing.T, client *ledgerclient.Client, key, owner string) int64 {
	t.Helper()
	response, err := client.Reserve(t.Context(), &ledgerv1.ReserveRequest{Namespace: namespace, Key: key, Owner: owner})
	require.NoError(t, err)
	require.NotNil(t, response.GetAcquired())
	return response.GetAcquired().GetFencingToken()
}

func TestAdminClient(t *testing.T) {
	noLeaks(t)

	t.Run("Entries, History and Events page through everything", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		admin := ledgerclient.NewAdminFromConn(b.conn)
		for i := range 5 {
			key := fmt.Sprintf("k%d", i)
			token := acquire(t, b.client, key, "w1")
			_, err := b.client.Complete(t.Context(), &ledgerv1.CompleteRequest{Namespace: namespace, Key: key, FencingToken: token})
			require.NoError(t, err)
		}

		request := &ledgerv1.ListEntriesRequest{Namespace: namespace, PageSize: 2}
		var keys []string
		for entry, err := range admin.Entries(t.Context(), request) {
			require.NoError(t, err)
			keys = append(keys, entry.GetKey())
		}
		require.Equal(t, []string{"k0", "k1", "k2", "k3", "k4"}, keys)
		require.Empty(t, request.GetPageToken(), "the request is not changed")

		var kinds []ledgerv1.EventKind
		for event, err := range admin.History(t.Context(), &ledgerv1.GetHistoryRequest{Namespace: namespace, Key: "k3", PageSize: 1}) {
			require.NoError(t, err)
			kinds = append(kinds, event.GetKind())
		}
		require.Equal(t, []ledgerv1.EventKind{ledgerv1.EventKind_EVENT_KIND_RESERVED, ledgerv1.EventKind_EVENT_KIND_COMPLETED}, kinds)

		events := 0
		for _, err := range admin.Events(t.Context(), &ledgerv1.ListEventsRequest{Namespace: namespace, PageSize: 3}) {
			require.NoError(t, err)
			events++
		}
		require.Equal(t, 10, events)

		// Stopping early makes no more calls and does not fail.
		for entry, err := range admin.Entries(t.Context(), request) {
			require.NoError(t, err)
			require.Equal(t, "k0", entry.GetKey())
			break
		}
	})

	t.Run("Namespaces and their settings", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		admin := ledgerclient.NewAdminFromConn(b.conn)
		maxAttempts := int32(3)
		created, err := admin.CreateNamespace(t.Context(), &ledgerv1.CreateNamespaceRequest{
			Name: "payments", Reason: "test",
			Settings: &ledgerv1.NamespaceSettings{Retention: durationpb.New(time.Hour), MaxAttempts: &maxAttempts},
		})
		require.NoError(t, err)
		require.Equal(t, time.Hour, created.GetNamespace().GetRetention().AsDuration())
		require.Equal(t, int32(3), created.GetNamespace().GetMaxAttempts())

		_, err = admin.CreateNamespace(t.Context(), &ledgerv1.CreateNamespaceRequest{Name: "payments", Reason: "again"})
		require.ErrorIs(t, err, ledgerclient.ErrAlreadyExists)
		require.Equal(t, "ALREADY_EXISTS", ledgerclient.Reason(err))

		_, err = admin.UpdateNamespace(t.Context(), &ledgerv1.UpdateNamespaceRequest{
			Name: "nope", Reason: "test", Settings: &ledgerv1.NamespaceSettings{MaxAttempts: &maxAttempts},
		})
		require.ErrorIs(t, err, ledgerclient.ErrNotFound)
		_, err = admin.GetNamespace(t.Context(), &ledgerv1.GetNamespaceRequest{Name: "nope"})
		require.ErrorIs(t, err, ledgerclient.ErrNotFound)

		acquire(t, b.client, "k", "w1") // creates billing with the defaults
		var names []string
		for ns, err := range admin.Namespaces(t.Context(), nil) {
			require.NoError(t, err)
			names = append(names, ns.GetName())
		}
		require.Equal(t, []string{namespace, "payments"}, names)
	})

	t.Run("admin actions and their errors", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		admin := ledgerclient.NewAdminFromConn(b.conn)
		token := acquire(t, b.client, "k", "w1")

		_, err := admin.ForceRelease(t.Context(), &ledgerv1.ForceReleaseRequest{Namespace: namespace, Key: "k", Reason: "r", FencingToken: token + 1})
		require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)
		released, err := admin.ForceRelease(t.Context(), &ledgerv1.ForceReleaseRequest{Namespace: namespace, Key: "k", Reason: "r", FencingToken: token})
		require.NoError(t, err)
		require.Equal(t, ledgerv1.State_STATE_RELEASED, released.GetEntry().GetState())
		_, err = admin.ForceRelease(t.Context(), &ledgerv1.ForceReleaseRequest{Namespace: namespace, Key: "k", Reason: "r"})
		require.ErrorIs(t, err, ledgerclient.ErrNotLeased)
		require.Equal(t, codes.FailedPrecondition, status.Code(err))

		_, err = admin.ForceRelease(t.Context(), &ledgerv1.ForceReleaseRequest{Namespace: namespace, Key: "k"})
		require.ErrorIs(t, err, ledgerclient.ErrInvalidArgument, "a reason is required")
		_, err = admin.ResetKey(t.Context(), &ledgerv1.ResetKeyRequest{Namespace: namespace, Key: "nope", Reason: "r"})
		require.ErrorIs(t, err, ledgerclient.ErrNotFound)

		purged, err := admin.PurgeExpired(t.Context(), &ledgerv1.PurgeExpiredRequest{Namespace: namespace, Reason: "r"})
		require.NoError(t, err)
		require.Zero(t, purged.GetPurgedEntries())
	})

	t.Run("Client.Admin shares the connection New made", func(t *testing.T) {
		t.Parallel()
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		serveTCP(t, ledgertest.Store(t, testConfig).Store, lis)
		client, err := ledgerclient.New(lis.Addr().String(), ledgerclient.WithInsecure())
		require.NoError(t, err)
		defer func() { require.NoError(t, client.Close()) }()
		acquire(t, client, "k", "w1")
		entries, err := client.Admin().ListEntries(t.Context(), &ledgerv1.ListEntriesRequest{Namespace: namespace})
		require.NoError(t, err)
		require.Len(t, entries.GetEntries(), 1)
	})

	t.Run("Client.Admin of a Client made by NewFromConn uses its connection", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		acquire(t, b.client, "k", "w1")
		namespaces, err := b.client.Admin().ListNamespaces(t.Context(), &ledgerv1.ListNamespacesRequest{})
		require.NoError(t, err)
		require.Equal(t, namespace, namespaces.GetNamespaces()[0].GetName())
	})

	t.Run("resets are made once; idempotent calls are retried", func(t *testing.T) {
		t.Parallel()
		attempts := &callCodes{}
		conn, err := grpc.NewClient(closedAddr(t), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithUnaryInterceptor(attempts.interceptor))
		require.NoError(t, err)
		defer func() { require.NoError(t, conn.Close()) }()
		admin := ledgerclient.NewAdminFromConn(conn)

		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err = admin.ResetKey(ctx, &ledgerv1.ResetKeyRequest{Namespace: namespace, Key: "k", Reason: "r"})
		require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
		require.NoError(t, ctx.Err(), "a reset is not retried until the context ends")
		require.Equal(t, []codes.Code{codes.Unavailable}, attempts.get())

		_, err = admin.PurgeExpired(ctx, &ledgerv1.PurgeExpiredRequest{Namespace: namespace, Reason: "r"})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
		require.Greater(t, len(attempts.get()), 2)
	})
}
