package server_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// TestAdminService drives the operator's RPCs through gRPC: listings,
// history, admin actions with their audit, namespaces, and the errors.
func TestAdminService(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	admin := ledgerv1.NewLedgerAdminServiceClient(b.conn)

	_, err := admin.CreateNamespace(ctx, &ledgerv1.CreateNamespaceRequest{Name: "ops", Reason: "test",
		Settings: &ledgerv1.NamespaceSettings{Retention: durationpb.New(20 * time.Millisecond), MaxAttempts: proto.Int32(3)}})
	require.NoError(t, err)
	_, err = admin.CreateNamespace(ctx, &ledgerv1.CreateNamespaceRequest{Name: "ops", Reason: "again"})
	requireReason(t, err, codes.AlreadyExists, "ALREADY_EXISTS")
	got, err := admin.GetNamespace(ctx, &ledgerv1.GetNamespaceRequest{Name: "ops"})
	require.NoError(t, err)
	require.Equal(t, int32(3), got.GetNamespace().GetMaxAttempts())
	require.Equal(t, 30*time.Second, got.GetNamespace().GetDefaultLeaseTtl().AsDuration())
	_, err = admin.GetNamespace(ctx, &ledgerv1.GetNamespaceRequest{Name: "nope"})
	requireReason(t, err, codes.NotFound, "NOT_FOUND")
	updated, err := admin.UpdateNamespace(ctx, &ledgerv1.UpdateNamespaceRequest{Name: "ops", Reason: "more room",
		Settings: &ledgerv1.NamespaceSettings{MaxResultBytes: proto.Int32(2048)}})
	require.NoError(t, err)
	require.Equal(t, int32(2048), updated.GetNamespace().GetMaxResultBytes())
	require.Equal(t, int32(3), updated.GetNamespace().GetMaxAttempts())

	held, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ops", Key: "held", Owner: "w1", LeaseTtl: durationpb.New(time.Hour)})
	require.NoError(t, err)
	_, err = b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ops", Key: "stuck", Owner: "w2", LeaseTtl: durationpb.New(20 * time.Millisecond)})
	require.NoError(t, err)
	done, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ops", Key: "done", Owner: "w3"})
	require.NoError(t, err)
	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ops", Key: "done", FencingToken: done.GetAcquired().GetFencingToken()})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		stuck, err := admin.ListEntries(ctx, &ledgerv1.ListEntriesRequest{Namespace: "ops", Stuck: true})
		require.NoError(t, err)
		return len(stuck.GetEntries()) == 1 && stuck.GetEntries()[0].GetKey() == "stuck"
	}, time.Minute, 10*time.Millisecond)
	leased, err := admin.ListEntries(ctx, &ledgerv1.ListEntriesRequest{Namespace: "ops", States: []ledgerv1.State{ledgerv1.State_STATE_LEASED}, PageSize: 1})
	require.NoError(t, err)
	require.Len(t, leased.GetEntries(), 1)
	require.Equal(t, "held", leased.GetEntries()[0].GetKey())
	require.NotEmpty(t, leased.GetNextPageToken())
	more, err := admin.ListEntries(ctx, &ledgerv1.ListEntriesRequest{Namespace: "ops", States: []ledgerv1.State{ledgerv1.State_STATE_LEASED}, PageSize: 1, PageToken: leased.GetNextPageToken()})
	require.NoError(t, err)
	require.Equal(t, "stuck", more.GetEntries()[0].GetKey())
	_, err = admin.ListEntries(ctx, &ledgerv1.ListEntriesRequest{Namespace: "ops", PageSize: 5000})
	st := requireReason(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	require.Contains(t, st.Message(), "page_size")

	_, err = admin.ForceRelease(ctx, &ledgerv1.ForceReleaseRequest{Namespace: "ops", Key: "held"})
	st = requireReason(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	require.Contains(t, st.Message(), "reason")
	released, err := admin.ForceRelease(ctx, &ledgerv1.ForceReleaseRequest{Namespace: "ops", Key: "held", Reason: "host lost"})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_RELEASED, released.GetEntry().GetState())
	_, err = admin.ForceRelease(ctx, &ledgerv1.ForceReleaseRequest{Namespace: "ops", Key: "held", Reason: "again"})
	requireReason(t, err, codes.FailedPrecondition, "NOT_LEASED")
	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ops", Key: "held", FencingToken: held.GetAcquired().GetFencingToken()})
	requireReason(t, err, codes.Aborted, "LEASE_LOST")

	reset, err := admin.ResetKey(ctx, &ledgerv1.ResetKeyRequest{Namespace: "ops", Key: "done", Reason: "re-run"})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_RELEASED, reset.GetEntry().GetState())

	lookup, err := b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ops", Key: "held", IncludeHistory: true})
	require.NoError(t, err)
	var kinds []ledgerv1.EventKind
	for _, e := range lookup.GetHistory() {
		kinds = append(kinds, e.GetKind())
	}
	require.Equal(t, []ledgerv1.EventKind{ledgerv1.EventKind_EVENT_KIND_RESERVED, ledgerv1.EventKind_EVENT_KIND_FORCE_RELEASED,
		ledgerv1.EventKind_EVENT_KIND_REFUSED_STALE_TOKEN}, kinds)
	require.Equal(t, "host lost", lookup.GetHistory()[1].GetDetail().GetFields()["reason"].GetStringValue())
	require.False(t, lookup.GetHistoryTruncated())

	history, err := admin.GetHistory(ctx, &ledgerv1.GetHistoryRequest{Namespace: "ops", Key: "done"})
	require.NoError(t, err)
	require.Len(t, history.GetEvents(), 3) // reserved, completed, reset
	events, err := admin.ListEvents(ctx, &ledgerv1.ListEventsRequest{Namespace: "ops", Kinds: []ledgerv1.EventKind{ledgerv1.EventKind_EVENT_KIND_NAMESPACE_CHANGED}})
	require.NoError(t, err)
	require.Len(t, events.GetEvents(), 2)
	require.Equal(t, "anonymous", events.GetEvents()[0].GetCaller())

	// Retention (20ms in this namespace): complete a key, purge it, and
	// Lookup reports it purged.
	again, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ops", Key: "done", Owner: "w4"})
	require.NoError(t, err)
	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ops", Key: "done", FencingToken: again.GetAcquired().GetFencingToken()})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		purged, err := admin.PurgeExpired(ctx, &ledgerv1.PurgeExpiredRequest{Namespace: "ops", Reason: "test"})
		require.NoError(t, err)
		return purged.GetPurgedEntries() == 1
	}, time.Minute, 10*time.Millisecond)
	gone, err := b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ops", Key: "done"})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_PURGED, gone.GetEntry().GetState())
	require.NotNil(t, gone.GetEntry().GetPurgedAt())
	require.Equal(t, again.GetAcquired().GetFencingToken(), gone.GetEntry().GetFencingToken())

	namespaces, err := admin.ListNamespaces(ctx, &ledgerv1.ListNamespacesRequest{})
	require.NoError(t, err)
	require.Equal(t, "ops", namespaces.GetNamespaces()[0].GetName())
}
