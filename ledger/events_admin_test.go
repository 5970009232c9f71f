package ledger_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/migrations"
)

// TestAdminEventKindsMatchTheirPredicates: the admin kinds are written in
// four places that must agree word for word, or a planner stops proving a
// partial index applies (and reads all of events) or a listing misses
// events: the retention index and its delete statement leave them out, the
// admin index and its listing keep exactly them, and ListEvents sends to
// that listing only the kinds of ledger's list.
func TestAdminEventKindsMatchTheirPredicates(t *testing.T) {
	t.Parallel()
	predicate := regexp.MustCompile(`kind (NOT )?IN \(([^)]*)\)`)
	kindsIn := func(name, text string, negated bool) string {
		t.Helper()
		found := predicate.FindAllStringSubmatch(text, -1)
		require.Len(t, found, 1, "%s: one kind predicate", name)
		require.Equal(t, negated, found[0][1] != "", "%s: %s", name, found[0][0])
		return found[0][2]
	}
	migration := func(file string) string {
		text, err := migrations.FS.ReadFile(file)
		require.NoError(t, err)
		up, _, _ := strings.Cut(string(text), "-- +goose Down")
		return up
	}
	want := make([]string, len(ledger.AdminEventKinds))
	for i, kind := range ledger.AdminEventKinds {
		want[i] = "'" + string(kind) + "'"
	}
	list := strings.Join(want, ", ")
	require.Equal(t, list, kindsIn("00009", migration("00009_event_retention.sql"), true))
	require.Equal(t, list, kindsIn("delete_events", ledger.QueryText("delete_events"), true))
	require.Equal(t, list, kindsIn("00011", migration("00011_admin_events_index.sql"), false))
	require.Equal(t, list, kindsIn("list_events_admin", ledger.QueryText("list_events_admin"), false))
}

// TestListEventsAdminKindsPlan: on a namespace with many events and few
// admin actions, the listing of admin kinds reads the partial index of
// admin events, with the parameters bound (a custom plan) and without
// (the generic plan pgx's prepared statements come to), and never scans
// events; the listing of any other kind walks the time range of an index
// of (namespace, at, id) that holds it (a custom plan picks the smaller
// events_retention_idx, which leaves the admin events out).
func TestListEventsAdminKindsPlan(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	_, err := b.pool.Exec(ctx, `
		INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, at)
		SELECT 'ns' || (i % 4), 'key-' || i, CASE WHEN i % 1000 = 0 THEN 'force_released' ELSE 'completed' END,
		       1, 'w', 1, 'x', now() - (i || ' seconds')::interval
		FROM generate_series(1, 40000) AS i;
		ANALYZE events;`)
	require.NoError(t, err)

	conn, err := b.pool.Acquire(ctx)
	require.NoError(t, err)
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "RESET plan_cache_mode")
		conn.Release()
	}()
	explain := func(statement, mode string, kinds string) string {
		t.Helper()
		name := statement + "_" + mode
		defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "DEALLOCATE "+name) }()
		for _, sql := range []string{
			"SET plan_cache_mode = " + mode,
			"PREPARE " + name + " (text, timestamptz, timestamptz, timestamptz, bigint, text[], bigint) AS " + ledger.QueryText(statement),
		} {
			_, err := conn.Exec(ctx, sql)
			require.NoError(t, err, sql)
		}
		return planText(t, conn, `EXPLAIN EXECUTE `+name+` ('ns0', '-infinity', 'infinity', NULL, 0, '`+kinds+`', 101)`)
	}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		admin := explain("list_events_admin", mode, "{force_released,reset}")
		require.Contains(t, admin, "events_admin_idx", "%s:\n%s", mode, admin)
		require.NotContains(t, admin, "Seq Scan", "%s:\n%s", mode, admin)
		other := explain("list_events", mode, "{completed}")
		require.NotContains(t, other, "Seq Scan", "%s:\n%s", mode, other)
		require.NotContains(t, other, "events_admin_idx", "%s:\n%s", mode, other)
	}
}

// TestListEventsAdminKinds: a listing of admin kinds alone (the partial
// index's statement) returns exactly the events a listing of every kind
// holds of those kinds, page after page; a listing that mixes admin and
// other kinds returns both.
func TestListEventsAdminKinds(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	ctx := ledger.WithCaller(context.Background(), "test-admin")
	for i := range 5 {
		key := "k" + string(rune('a'+i))
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: "w", LeaseTTL: time.Minute}, ledger.Acquired)
		_, _, err := b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: "ns", Key: key, Reason: "stuck worker", FencingToken: r.FencingToken})
		require.NoError(t, err)
		_, err = b.store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: "ns", Key: key, Reason: "retry from scratch"})
		require.NoError(t, err)
	}
	_, err := b.store.UpdateNamespace(ctx, "ns", ledger.NamespaceUpdate{Retention: ptr(2 * time.Hour)}, "longer retention")
	require.NoError(t, err)

	list := func(kinds ...ledger.EventKind) []ledger.Event {
		t.Helper()
		var events []ledger.Event
		page := ledger.Page{Size: 2}
		for {
			got, err := b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns", Kinds: kinds}, page)
			require.NoError(t, err)
			events = append(events, got.Events...)
			if got.NextPageToken == "" {
				return events
			}
			page.Token = got.NextPageToken
		}
	}
	only := func(events []ledger.Event, kinds ...ledger.EventKind) []ledger.Event {
		return slices.DeleteFunc(slices.Clone(events), func(e ledger.Event) bool { return !slices.Contains(kinds, e.Kind) })
	}
	all := list()
	for _, kinds := range [][]ledger.EventKind{
		{ledger.EventForceReleased},
		{ledger.EventReset, ledger.EventForceReleased},
		ledger.AdminEventKinds,
		{ledger.EventForceReleased, ledger.EventReserved}, // mixed: the general statement
	} {
		want := only(all, kinds...)
		require.NotEmpty(t, want, "%v", kinds)
		require.Equal(t, want, list(kinds...), "%v", kinds)
	}
	require.Len(t, only(all, ledger.EventForceReleased), 5)
	require.Len(t, only(all, ledger.EventReset), 5)
	require.Len(t, only(all, ledger.AdminEventKinds...), 12, "5 force releases, 5 resets, the creation and the change")
}
