package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// tenants is a shared ledgerd with authentication: a platform admin, the
// admin of team-a's namespaces (pattern team-a-*) and team-a's worker
// (pattern team-a-*), with an existing namespace team-a-1.
type tenants struct {
	ledger ledgertest.Bundle
	conn   *grpc.ClientConn
	tokens map[string]string // "platform-admin", "tenant-admin", "worker"
}

func setupTenants(t *testing.T, cfg ledger.Config) tenants {
	t.Helper()
	b := ledgertest.Store(t, cfg)
	ctx := context.Background()
	tokens := map[string]string{}
	for _, who := range []struct{ kind, principal, pattern string }{
		{"platform-admin", "root", "*"},
		{"tenant-admin", "ops@team-a", "team-a-*"},
		{"worker", "svc-team-a", "team-a-*"},
	} {
		role := map[string]ledger.Role{"platform-admin": ledger.RolePlatformAdmin, "tenant-admin": ledger.RoleAdmin, "worker": ledger.RoleWorker}[who.kind]
		_, err := b.Store.GrantRole(ctx, ledger.RoleBinding{Principal: who.principal, NamespacePattern: who.pattern, Role: role}, "test")
		require.NoError(t, err)
		_, secret, err := b.Store.CreateToken(ctx, who.principal, who.kind, 0, "test")
		require.NoError(t, err)
		tokens[who.kind] = secret
	}
	_, err := b.Store.CreateNamespace(ctx, "team-a-1", ledger.NamespaceUpdate{}, "test")
	require.NoError(t, err)
	return tenants{ledger: b, conn: serveWithAuth(t, b.Store), tokens: tokens}
}

// serveWithAuth serves store in memory with authentication, as a replica of
// a deployment does.
func serveWithAuth(t *testing.T, store *ledger.Store) *grpc.ClientConn {
	t.Helper()
	conn, _ := serveAuthServer(t, store)
	return conn
}

func serveAuthServer(t *testing.T, store *ledger.Store) (*grpc.ClientConn, *server.Server) {
	t.Helper()
	srv, err := server.New(store, server.Config{Logger: slog.New(slog.DiscardHandler), Auth: ledgertest.RunAuth(t, store)})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := ledgertest.Dial(t, lis)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(t, <-served)
	})
	return conn, srv
}

func (b tenants) admin(ctx context.Context, kind string) (context.Context, ledgerv1.LedgerAdminServiceClient) {
	return as(ctx, b.tokens[kind]), ledgerv1.NewLedgerAdminServiceClient(b.conn)
}

// namespaceRow is a namespaces row as text, to show that a refused call
// changed nothing.
func namespaceRow(t *testing.T, b ledgertest.Bundle, name string) string {
	t.Helper()
	var row string
	require.NoError(t, b.Pool.QueryRow(context.Background(), `SELECT n::text FROM namespaces n WHERE name = $1`, name).Scan(&row))
	return row
}

func eventKinds(t *testing.T, b ledgertest.Bundle, namespace string) []string {
	t.Helper()
	var kinds []string
	require.NoError(t, b.Pool.QueryRow(context.Background(),
		`SELECT coalesce(array_agg(kind ORDER BY id), '{}') FROM events WHERE namespace = $1`, namespace).Scan(&kinds))
	return kinds
}

// TestIsolationTenantAdminCannotEraseItsResets: a namespace admin who
// shortens its event retention to 1ms to erase the record of a reset is
// refused (the server's floor, 7 days by default, and event_retention at
// least retention), and the sweeper keeps the reset event.
func TestIsolationTenantAdminCannotEraseItsResets(t *testing.T) {
	t.Parallel()
	b := setupTenants(t, ledger.Config{})
	ctx := context.Background()
	r, err := b.ledger.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "team-a-1", Key: "k", Owner: "w"})
	require.NoError(t, err)
	adminCtx, admin := b.admin(ctx, "tenant-admin")
	_, err = admin.ResetKey(adminCtx, &ledgerv1.ResetKeyRequest{Namespace: "team-a-1", Key: "k", Reason: "cover-up", FencingToken: r.FencingToken})
	require.NoError(t, err)
	before := namespaceRow(t, b.ledger, "team-a-1")

	for _, settings := range []*ledgerv1.NamespaceSettings{
		{EventRetention: durationpb.New(time.Millisecond)},
		{EventRetention: durationpb.New(time.Millisecond), Retention: durationpb.New(time.Millisecond)},
		{EventRetention: durationpb.New(240 * time.Hour), Retention: durationpb.New(480 * time.Hour)}, // below retention
	} {
		_, err = admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r", Settings: settings})
		st := requireReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
		require.Contains(t, st.Message(), "settings.event_retention", "%v", settings)
		require.Equal(t, before, namespaceRow(t, b.ledger, "team-a-1"), "a refused update changes nothing")
	}
	_, err = admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r",
		Settings: &ledgerv1.NamespaceSettings{EventRetention: durationpb.New(time.Millisecond)}})
	require.Contains(t, status.Convert(err).Message(), "168h0m0s", "the message names the floor")

	time.Sleep(5 * time.Millisecond) // the millisecond the admin asked for is over
	report := b.ledger.Store.Sweep(ctx)
	require.NoError(t, report.Err)
	require.Contains(t, eventKinds(t, b.ledger, "team-a-1"), "reset")
}

// TestIsolationAdminEventsOutliveEventRetention: with a short event
// retention that the platform allows, the sweeper deletes a namespace's
// work events but keeps the events of admin actions (reset, force release,
// namespace changes) and the platform's events for the admin event
// retention.
func TestIsolationAdminEventsOutliveEventRetention(t *testing.T) {
	t.Parallel()
	b := setupTenants(t, ledger.Config{Limits: ledger.Limits{MinEventRetention: time.Millisecond}})
	ctx := context.Background()
	adminCtx, admin := b.admin(ctx, "tenant-admin")
	_, err := admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "short",
		Settings: &ledgerv1.NamespaceSettings{Retention: durationpb.New(time.Millisecond), EventRetention: durationpb.New(time.Millisecond)}})
	require.NoError(t, err)
	for _, key := range []string{"reset-me", "release-me", "work"} {
		_, err := b.ledger.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "team-a-1", Key: key, Owner: "w", LeaseTTL: time.Hour})
		require.NoError(t, err)
	}
	_, err = admin.ResetKey(adminCtx, &ledgerv1.ResetKeyRequest{Namespace: "team-a-1", Key: "reset-me", Reason: "r"})
	require.NoError(t, err)
	_, err = admin.ForceRelease(adminCtx, &ledgerv1.ForceReleaseRequest{Namespace: "team-a-1", Key: "release-me", Reason: "r"})
	require.NoError(t, err)
	platformEvents := len(eventKinds(t, b.ledger, ""))
	require.Positive(t, platformEvents, "the tokens and bindings of setupTenants")

	time.Sleep(5 * time.Millisecond)
	report := b.ledger.Store.Sweep(ctx)
	require.NoError(t, report.Err)
	require.Equal(t, int64(3), report.DeletedEvents["team-a-1"], "the three reserved events")
	require.Equal(t, []string{"namespace_changed", "namespace_changed", "reset", "force_released"}, eventKinds(t, b.ledger, "team-a-1"))
	require.Len(t, eventKinds(t, b.ledger, ""), platformEvents)
}

// TestIsolationSweeperHonoursTheFloorForStoredRows: a namespace whose
// stored event retention predates the floor (written directly, as an
// older ledgerd could have) keeps its events for the floor.
func TestIsolationSweeperHonoursTheFloorForStoredRows(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{})
	ctx := context.Background()
	r, err := b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "old", Key: "k", Owner: "w"})
	require.NoError(t, err)
	_, err = b.Store.Complete(ctx, ledger.CompleteRequest{Namespace: "old", Key: "k", FencingToken: r.FencingToken})
	require.NoError(t, err)
	_, err = b.Pool.Exec(ctx, `UPDATE namespaces SET event_retention_ms = 1, retention_ms = 1 WHERE name = 'old'`)
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)

	report := b.Store.Sweep(ctx)
	require.NoError(t, report.Err)
	require.Empty(t, report.DeletedEvents)
	require.Equal(t, []string{"namespace_created", "reserved", "completed"}, eventKinds(t, b, "old"),
		"events are kept for the floor (7 days), whatever the row says")
}

// TestIsolationTenantAdminCannotSetPlatformLimits: a namespace admin may
// tune its namespace's default lease, retention, attempts and event
// retention within the platform's bounds, but setting any platform-owned
// limit or quota is PERMISSION_DENIED naming it (on creation too), and
// retention above the server's ceiling is refused for everyone; refused
// calls change nothing.
func TestIsolationTenantAdminCannotSetPlatformLimits(t *testing.T) {
	t.Parallel()
	b := setupTenants(t, ledger.Config{})
	ctx := context.Background()
	adminCtx, admin := b.admin(ctx, "tenant-admin")
	rootCtx, root := b.admin(ctx, "platform-admin")
	forever := durationpb.New(292 * 365 * 24 * time.Hour)

	for _, c := range []struct {
		field    string
		settings *ledgerv1.NamespaceSettings
	}{
		{"settings.max_lease_ttl", &ledgerv1.NamespaceSettings{MaxLeaseTtl: durationpb.New(2 * time.Hour)}},
		{"settings.max_result_bytes", &ledgerv1.NamespaceSettings{MaxResultBytes: proto.Int32(16 << 20)}},
		{"settings.max_held_leases", &ledgerv1.NamespaceSettings{MaxHeldLeases: proto.Int64(0)}},
		{"settings.max_stored_bytes", &ledgerv1.NamespaceSettings{MaxStoredBytes: proto.Int64(0)}},
	} {
		t.Run(c.field, func(t *testing.T) {
			before, rows := namespaceRow(t, b.ledger, "team-a-1"), counts(t, b.ledger)
			_, err := admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r", Settings: c.settings})
			st := requireReason(t, err, codes.PermissionDenied, server.ReasonPermissionDenied)
			require.Contains(t, st.Message(), c.field)
			_, err = admin.CreateNamespace(adminCtx, &ledgerv1.CreateNamespaceRequest{Name: "team-a-new", Reason: "r", Settings: c.settings})
			st = requireReason(t, err, codes.PermissionDenied, server.ReasonPermissionDenied)
			require.Contains(t, st.Message(), c.field)
			require.Equal(t, before, namespaceRow(t, b.ledger, "team-a-1"))
			require.Equal(t, rows, counts(t, b.ledger), "nothing created, no event")

			// The platform admin sets it.
			_, err = root.UpdateNamespace(rootCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r", Settings: c.settings})
			require.NoError(t, err)
		})
	}

	// Retention above the ceiling (365 days by default): refused for both.
	for name, ctx := range map[string]context.Context{"tenant admin": adminCtx, "platform admin": rootCtx} {
		before := namespaceRow(t, b.ledger, "team-a-1")
		_, err := admin.UpdateNamespace(ctx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r",
			Settings: &ledgerv1.NamespaceSettings{Retention: forever, EventRetention: forever}})
		st := requireReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
		require.Contains(t, st.Message(), "settings.retention", name)
		require.Contains(t, st.Message(), "8760h0m0s", name)
		require.Equal(t, before, namespaceRow(t, b.ledger, "team-a-1"), name)
	}

	// What a tenant admin may do: tune within the bounds; a namespace it
	// creates gets the server's defaults for the platform's limits.
	tuned := &ledgerv1.NamespaceSettings{DefaultLeaseTtl: durationpb.New(time.Minute), Retention: durationpb.New(30 * 24 * time.Hour),
		MaxAttempts: proto.Int32(5), EventRetention: durationpb.New(60 * 24 * time.Hour)}
	_, err := admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r", Settings: tuned})
	require.NoError(t, err)
	created, err := admin.CreateNamespace(adminCtx, &ledgerv1.CreateNamespaceRequest{Name: "team-a-2", Reason: "r", Settings: tuned})
	require.NoError(t, err)
	defaults := ledger.DefaultNamespaceSettings()
	ns := created.GetNamespace()
	require.Equal(t, defaults.MaxLeaseTTL, ns.GetMaxLeaseTtl().AsDuration())
	require.Equal(t, int32(defaults.MaxResultBytes), ns.GetMaxResultBytes())
	require.Equal(t, time.Minute, ns.GetDefaultLeaseTtl().AsDuration())
	// default_lease_ttl stays within max_lease_ttl.
	_, err = admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-2", Reason: "r",
		Settings: &ledgerv1.NamespaceSettings{DefaultLeaseTtl: durationpb.New(2 * time.Hour)}})
	st := requireReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	require.Contains(t, st.Message(), "settings.max_lease_ttl")
}

// TestIsolationPlatformLimitsOverHTTP: the HTTP port goes through the same
// authorization, so a tenant admin's JSON UpdateNamespace of a quota is
// refused there too.
func TestIsolationPlatformLimitsOverHTTP(t *testing.T) {
	t.Parallel()
	b := setupTenants(t, ledger.Config{})
	_, srv := serveAuthServer(t, b.ledger.Store)
	gatewayCtx, closeGateway := context.WithCancel(context.Background())
	t.Cleanup(closeGateway)
	handler, err := srv.HTTPHandler(gatewayCtx, server.HTTPConfig{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	httpServer := httptest.NewServer(handler)
	t.Cleanup(httpServer.Close)

	before := namespaceRow(t, b.ledger, "team-a-1")
	req, err := http.NewRequest(http.MethodPost, httpServer.URL+"/ledger.v1.LedgerAdminService/UpdateNamespace",
		strings.NewReader(`{"name": "team-a-1", "reason": "r", "settings": {"maxHeldLeases": "0"}}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+b.tokens["tenant-admin"])
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusForbidden, res.StatusCode)
	require.Equal(t, before, namespaceRow(t, b.ledger, "team-a-1"))
}

// TestIsolationPatternWorkerCannotAutoCreate: with auto-creation off (the
// default of a secure ledgerd), a worker whose binding is a pattern cannot
// reserve in a namespace that does not exist: NOT_FOUND, naming the
// namespace and who creates it, and nothing is created.
func TestIsolationPatternWorkerCannotAutoCreate(t *testing.T) {
	t.Parallel()
	b := setupTenants(t, ledger.Config{NoAutoCreateNamespaces: true})
	ctx := as(context.Background(), b.tokens["worker"])
	client := ledgerv1.NewLedgerServiceClient(b.conn)
	rows := counts(t, b.ledger)

	_, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "team-a-fresh", Key: "k", Owner: "w"})
	st := requireReason(t, err, codes.NotFound, server.ReasonNotFound)
	require.Contains(t, st.Message(), "team-a-fresh")
	require.Contains(t, st.Message(), "ledgerctl namespaces create")
	_, err = client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "team-a-fresh", Owner: "w",
		Items: []*ledgerv1.ReserveBatchItem{{Key: "a"}, {Key: "b"}}})
	requireReason(t, err, codes.NotFound, server.ReasonNotFound)
	require.Equal(t, rows, counts(t, b.ledger), "nothing created")

	// A namespace an admin created serves as before.
	res, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "team-a-1", Key: "k", Owner: "w"})
	require.NoError(t, err)
	require.NotNil(t, res.GetAcquired())
}

// TestIsolationNamespaceCapPerPattern: with auto-creation on, the
// namespaces that a pattern's holders create (by Reserve, or by
// CreateNamespace) stop at --max-namespaces-per-pattern, exactly, even with
// the creations spread over two replicas at once; the refusal is
// RESOURCE_EXHAUSTED QUOTA_EXCEEDED with the limit and usage. Platform
// admins are not bound.
func TestIsolationNamespaceCapPerPattern(t *testing.T) {
	t.Parallel()
	const limit = 4 // team-a-1 is one of them
	cfg := ledger.Config{MaxNamespacesPerPattern: limit}
	b := setupTenants(t, cfg)
	replica := ledgertest.Replica(t, b.ledger, cfg)
	conns := []*grpc.ClientConn{b.conn, serveWithAuth(t, replica.Store)}
	ctx := as(context.Background(), b.tokens["worker"])

	const attempts = limit + 3
	var wg sync.WaitGroup
	errs := make([]error, attempts)
	start := make(chan struct{})
	for i := range attempts {
		wg.Go(func() {
			<-start
			_, errs[i] = ledgerv1.NewLedgerServiceClient(conns[i%2]).Reserve(ctx,
				&ledgerv1.ReserveRequest{Namespace: fmt.Sprintf("team-a-w%d", i), Key: "k", Owner: "w"})
		})
	}
	close(start)
	wg.Wait()
	var created, refused int
	for _, err := range errs {
		if err == nil {
			created++
			continue
		}
		st := requireReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)
		info := errorInfo(t, st)
		require.Equal(t, fmt.Sprint(limit), info.GetMetadata()["limit"])
		require.Equal(t, fmt.Sprint(limit+1), info.GetMetadata()["usage"])
		require.Equal(t, "team-a-*", info.GetMetadata()["pattern"])
		refused++
	}
	require.Equal(t, limit-1, created, "with team-a-1, exactly the limit")
	var namespaces int
	require.NoError(t, b.ledger.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM namespaces WHERE name LIKE 'team-a-%'`).Scan(&namespaces))
	require.Equal(t, limit, namespaces)

	// The tenant admin is bound too; the platform admin is not.
	adminCtx, admin := b.admin(context.Background(), "tenant-admin")
	_, err := admin.CreateNamespace(adminCtx, &ledgerv1.CreateNamespaceRequest{Name: "team-a-by-admin", Reason: "r"})
	requireReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)
	rootCtx, root := b.admin(context.Background(), "platform-admin")
	_, err = root.CreateNamespace(rootCtx, &ledgerv1.CreateNamespaceRequest{Name: "team-a-by-root", Reason: "r"})
	require.NoError(t, err)
	// Reserving in an existing namespace is not a creation.
	_, err = ledgerv1.NewLedgerServiceClient(b.conn).Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "team-a-by-root", Key: "k", Owner: "w"})
	require.NoError(t, err)
}

// TestIsolationSweeperSaysWhoLostWhat: the sweeper's log line and
// ledgerd_events_deleted_total name the namespace whose events it deleted.
func TestIsolationSweeperSaysWhoLostWhat(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{Limits: ledger.Limits{MinEventRetention: time.Millisecond}})
	ctx := context.Background()
	short := time.Millisecond
	_, err := b.Store.CreateNamespace(ctx, "team-a-1", ledger.NamespaceUpdate{Retention: &short, EventRetention: &short}, "test")
	require.NoError(t, err)
	// Released entries are never purged: the pass deletes events only.
	r, err := b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "team-a-1", Key: "k", Owner: "w"})
	require.NoError(t, err)
	_, err = b.Store.Release(ctx, ledger.ReleaseRequest{Namespace: "team-a-1", Key: "k", FencingToken: r.FencingToken})
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)

	log := &ledgertest.LogBuffer{}
	metrics := server.NewMetrics(b.Store, server.MetricsConfig{})
	report := b.Store.Sweep(ctx)
	require.NoError(t, report.Err)
	server.SweepReporter(metrics, slog.New(slog.NewJSONHandler(log, nil)))(report)

	require.Contains(t, log.String(), `"msg":"swept","namespace":"team-a-1","purged_entries":0,"deleted_events":2`)
	families, err := metrics.Registry().Gather()
	require.NoError(t, err)
	var deleted float64
	for _, family := range families {
		if family.GetName() != "ledgerd_events_deleted_total" {
			continue
		}
		for _, m := range family.GetMetric() {
			if m.GetLabel()[0].GetValue() == "team-a-1" {
				deleted = m.GetCounter().GetValue()
			}
		}
	}
	require.Equal(t, float64(2), deleted, "reserved and released; namespace_changed is an admin event")
}

func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("no ErrorInfo in %v", st.Details())
	return nil
}
