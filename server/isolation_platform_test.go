package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// TestIsolationMetricsNamespaceLabelsCapped: with more namespaces in use
// than the label cap, every series labelled by namespace — whatever its
// metric, so that a new one cannot escape the cap — names at most the cap's
// namespaces, the same ones for all, and counts the rest as "_other".
func TestIsolationMetricsNamespaceLabelsCapped(t *testing.T) {
	t.Parallel()
	const maxLabels, namespaces = 3, 7
	b := ledgertest.Store(t, ledger.Config{})
	metrics := server.NewMetrics(b.Store, server.MetricsConfig{MaxNamespaceLabels: maxLabels})
	addr := ledgertest.ServeTCP(t, b.Store, server.Config{Metrics: metrics})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := ledgerv1.NewLedgerServiceClient(conn)

	// In every namespace: a lease held (the lease gauges, a Reserve
	// outcome), a Reserve over the quota (a quota refusal) and a stale
	// Complete (a stale-token refusal); and a sweep that purged entries.
	ctx := context.Background()
	one := int64(1)
	purged := map[string]int64{}
	for i := range namespaces {
		ns := fmt.Sprintf("tenant-%d", i)
		_, err := b.Store.CreateNamespace(ctx, ns, ledger.NamespaceUpdate{MaxHeldLeases: &one}, "test")
		require.NoError(t, err)
		_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "held", Owner: "w"})
		require.NoError(t, err)
		_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "over", Owner: "w"})
		requireReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)
		_, err = client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: ns, Key: "held", FencingToken: 99})
		require.Equal(t, codes.Aborted, status.Code(err), "%v", err)
		purged[ns] = 1
	}
	metrics.ObserveSweep(ledger.SweepReport{PurgedEntries: purged})

	families, err := metrics.Registry().Gather()
	require.NoError(t, err)
	labelled := map[string][]string{} // metric name → namespace labels, "_other" included
	for _, family := range families {
		for _, m := range family.GetMetric() {
			for _, label := range m.GetLabel() {
				if label.GetName() == "namespace" && !slices.Contains(labelled[family.GetName()], label.GetValue()) {
					labelled[family.GetName()] = append(labelled[family.GetName()], label.GetValue())
				}
			}
		}
	}
	for _, name := range []string{"ledgerd_reserve_outcomes_total", "ledgerd_stale_token_refusals_total",
		"ledgerd_quota_refusals_total", "ledgerd_sweeper_purged_entries_total", "ledgerd_leases_held", "ledgerd_leases_expired"} {
		require.Contains(t, labelled, name, "the test drives every series labelled by namespace")
	}
	named := map[string]bool{} // the namespaces with a label of their own, in any series
	for name, values := range labelled {
		require.LessOrEqual(t, len(values), maxLabels+1, "%s: %v", name, values)
		for _, v := range values {
			if v != "_other" {
				named[v] = true
			}
		}
	}
	require.Len(t, named, maxLabels, "one cap for all the series: %v", labelled)

	// What the namespaces beyond the cap did is counted, not dropped.
	require.Contains(t, labelled["ledgerd_leases_held"], "_other")
	held := 0.0
	for _, family := range families {
		if family.GetName() == "ledgerd_leases_held" {
			for _, m := range family.GetMetric() {
				held += m.GetGauge().GetValue()
			}
		}
	}
	require.Equal(t, float64(namespaces), held, "every held lease is in some series")
}
