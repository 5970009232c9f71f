package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestEventRetentionPlanSkipsAdminEvents: a namespace whose admin made many
// resets (kept for the admin event retention) and whose work events are
// past its event retention: the sweeper's batch reads the work events
// through the partial index that leaves admin events out, so it never reads
// the kept ones again, and deletes exactly the work events.
func TestEventRetentionPlanSkipsAdminEvents(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	_, err := b.pool.Exec(ctx, `
		INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, at)
		SELECT 'ns' || (i % 4), 'key-' || i, CASE WHEN i % 3 = 0 THEN 'reset' ELSE 'completed' END, 1, 'w', 1, 'x',
		       now() - interval '40 days' - (i || ' seconds')::interval
		FROM generate_series(1, 20000) AS i;
		ANALYZE events;`)
	require.NoError(t, err)

	plan := planText(t, b.pool, "EXPLAIN "+ledger.QueryText("delete_events"), "ns1", 1000,
		(30 * 24 * time.Hour).Milliseconds(), (365 * 24 * time.Hour).Milliseconds())
	require.Contains(t, plan, "events_retention_idx", plan)
	require.Contains(t, plan, "events_pkey", plan)
	require.NotContains(t, plan, "Seq Scan on events", plan)

	var admin, work int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE kind = 'reset'), count(*) FILTER (WHERE kind <> 'reset')
		FROM events WHERE namespace = 'ns1'`).Scan(&admin, &work))
	deleted := 0
	for {
		tag, err := b.pool.Exec(ctx, ledger.QueryText("delete_events"), "ns1", 1000,
			(30 * 24 * time.Hour).Milliseconds(), (365 * 24 * time.Hour).Milliseconds())
		require.NoError(t, err)
		deleted += int(tag.RowsAffected())
		if tag.RowsAffected() < 1000 {
			break
		}
	}
	require.Equal(t, work, deleted)
	var left int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'ns1'`).Scan(&left))
	require.Equal(t, admin, left, "the resets stay")
}

// TestNamespaceSettingsBounds: the platform's bounds of the settings, for
// every caller: retention under the ceiling, event retention between the
// floor and the ceiling and at least the retention; refused changes leave
// the row as it was.
func TestNamespaceSettingsBounds(t *testing.T) {
	t.Parallel()
	b := setupWith(t, ledger.Config{
		Limits:            ledger.Limits{MaxRetention: 48 * time.Hour, MinEventRetention: time.Hour, MaxEventRetention: 96 * time.Hour},
		NamespaceDefaults: ledger.NamespaceSettings{Retention: time.Hour, EventRetention: 2 * time.Hour},
	})
	ctx := context.Background()
	_, err := b.store.CreateNamespace(ctx, "ns", ledger.NamespaceUpdate{Retention: ptr(time.Hour), EventRetention: ptr(2 * time.Hour)}, "test")
	require.NoError(t, err)
	for _, c := range []struct {
		update ledger.NamespaceUpdate
		field  string
	}{
		{ledger.NamespaceUpdate{Retention: ptr(49 * time.Hour)}, "settings.retention"},
		{ledger.NamespaceUpdate{EventRetention: ptr(time.Minute)}, "settings.event_retention"},
		{ledger.NamespaceUpdate{EventRetention: ptr(97 * time.Hour)}, "settings.event_retention"},
		{ledger.NamespaceUpdate{Retention: ptr(3 * time.Hour)}, "settings.event_retention"}, // above event retention 2h
	} {
		_, err := b.store.UpdateNamespace(ctx, "ns", c.update, "test")
		var invalid *ledger.ValidationError
		require.ErrorAs(t, err, &invalid)
		require.Equal(t, c.field, invalid.Field)
		_, err = b.store.CreateNamespace(ctx, "other", c.update, "test")
		require.ErrorAs(t, err, &invalid)
	}
	ns, err := b.store.GetNamespace(ctx, "ns")
	require.NoError(t, err)
	require.Equal(t, time.Hour, ns.Settings.Retention)
	require.Equal(t, 2*time.Hour, ns.Settings.EventRetention)
	_, err = b.store.GetNamespace(ctx, "other")
	require.ErrorIs(t, err, ledger.ErrNotFound)

	// The server's own defaults must fit: ledgerd refuses to start otherwise.
	for _, cfg := range []ledger.Config{
		{Limits: ledger.Limits{MaxRetention: time.Hour}},                                                  // default retention 7d
		{NamespaceDefaults: ledger.NamespaceSettings{Retention: 60 * 24 * time.Hour}},                     // above event retention 30d
		{Limits: ledger.Limits{MinEventRetention: 40 * 24 * time.Hour}},                                   // default event retention 30d
		{Limits: ledger.Limits{MaxRetention: 800 * 24 * time.Hour}},                                       // above the event ceiling
		{AdminEventRetention: time.Hour},                                                                  // below the floor
		{NamespaceDefaults: ledger.NamespaceSettings{EventRetention: time.Hour}, Limits: ledger.Limits{}}, // below the floor
		{MaxNamespacesPerPattern: -1},
	} {
		require.Error(t, cfg.Validate(), "%+v", cfg)
	}
	require.NoError(t, ledger.Config{}.Validate())
}

// TestPlatformFields names the platform-owned settings an update sets.
func TestPlatformFields(t *testing.T) {
	t.Parallel()
	require.Empty(t, ledger.NamespaceUpdate{DefaultLeaseTTL: ptr(time.Minute), Retention: ptr(time.Hour),
		MaxAttempts: ptr(3), EventRetention: ptr(time.Hour)}.PlatformFields())
	zero := int64(0)
	require.Equal(t, []string{"settings.max_lease_ttl", "settings.max_result_bytes", "settings.max_held_leases", "settings.max_stored_bytes"},
		ledger.NamespaceUpdate{MaxLeaseTTL: ptr(time.Hour), MaxResultBytes: ptr(1), MaxHeldLeases: &zero, MaxStoredBytes: &zero}.PlatformFields())
}

// TestNoAutoCreateNamespaces: with auto-creation off, a Reserve or a
// ReserveBatch in a namespace that does not exist is ErrNotFound and
// creates nothing; once an admin creates it, it serves.
func TestNoAutoCreateNamespaces(t *testing.T) {
	t.Parallel()
	cfg := testConfig
	cfg.NoAutoCreateNamespaces = true
	b := setupWith(t, cfg)
	ctx := context.Background()
	_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "fresh", Key: "k", Owner: "w"})
	require.ErrorIs(t, err, ledger.ErrNotFound)
	require.Contains(t, err.Error(), "ledgerctl namespaces create fresh")
	_, err = b.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{Namespace: "fresh", Owner: "w", Items: []ledger.ReserveBatchItem{{Key: "a"}}})
	require.ErrorIs(t, err, ledger.ErrNotFound)
	require.Zero(t, b.count(t, "namespaces"))
	require.Zero(t, b.count(t, "events"))

	_, err = b.store.CreateNamespace(ctx, "fresh", ledger.NamespaceUpdate{}, "test")
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "fresh", Key: "k", Owner: "w"}, ledger.Acquired)
}

// TestNamespaceCapCountsThePattern: the creations of a caller authorized
// by patterns count every namespace each pattern matches, whoever created
// it; a name that exists is not a creation; a caller with no pattern is
// not bound.
func TestNamespaceCapCountsThePattern(t *testing.T) {
	t.Parallel()
	b := setupWith(t, ledger.Config{MaxNamespacesPerPattern: 2})
	ctx := context.Background()
	_, err := b.store.CreateNamespace(ctx, "team-a_x", ledger.NamespaceUpdate{}, "platform") // '_' is no wildcard
	require.NoError(t, err)
	_, err = b.store.CreateNamespace(ctx, "team-b-1", ledger.NamespaceUpdate{}, "platform")
	require.NoError(t, err)
	worker := ledger.WithCreatorPatterns(ctx, "team-a-*", "team-a-1") // a name without "*" is no pattern
	b.reserve(t, ledger.ReserveRequest{Namespace: "team-a-1", Key: "k", Owner: "w"}, ledger.Acquired)
	for i := range 2 {
		_, err = b.store.Reserve(worker, ledger.ReserveRequest{Namespace: fmt.Sprintf("team-a-%d", i+2), Key: "k", Owner: "w"})
		if i == 0 {
			require.NoError(t, err, "team-a-1 and team-a-2: the limit")
			continue
		}
		var quota *ledger.QuotaError
		require.ErrorAs(t, err, &quota)
		require.Equal(t, ledger.QuotaError{Namespace: "team-a-3", Quota: ledger.QuotaNamespacesPerPattern, Pattern: "team-a-*", Limit: 2, Usage: 3}, *quota)
	}
	_, err = b.store.Reserve(worker, ledger.ReserveRequest{Namespace: "team-a-1", Key: "k2", Owner: "w"})
	require.NoError(t, err, "an existing namespace")
	_, err = b.store.CreateNamespace(worker, "team-a-9", ledger.NamespaceUpdate{}, "test")
	require.ErrorIs(t, err, ledger.ErrQuotaExceeded)
	_, err = b.store.CreateNamespace(ctx, "team-a-9", ledger.NamespaceUpdate{}, "platform")
	require.NoError(t, err)
	require.Equal(t, 5, b.count(t, "namespaces"))
}
