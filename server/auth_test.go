package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// authBundle is an in-memory ledgerd with authentication, and tokens for
// principals of every kind.
type authBundle struct {
	ledger ledgertest.Bundle
	conn   *grpc.ClientConn
	lis    *bufconn.Listener
	auth   *server.Auth
	tokens map[string]string // by caller kind
}

func setupAuth(t *testing.T) authBundle {
	t.Helper()
	b := ledgertest.Store(t, ledger.Config{})
	ctx := context.Background()
	tokens := map[string]string{}
	issue := func(kind, principal string, bindings ...ledger.RoleBinding) {
		for _, binding := range bindings {
			binding.Principal = principal
			_, err := b.Store.GrantRole(ctx, binding, "test")
			require.NoError(t, err)
		}
		_, secret, err := b.Store.CreateToken(ctx, principal, kind, 0, "test")
		require.NoError(t, err)
		tokens[kind] = secret
	}
	issue("platform-admin", "root", ledger.RoleBinding{NamespacePattern: "*", Role: ledger.RolePlatformAdmin})
	issue("admin", "ops@ns", ledger.RoleBinding{NamespacePattern: "ns", Role: ledger.RoleAdmin})
	issue("worker", "svc-ns", ledger.RoleBinding{NamespacePattern: "ns", Role: ledger.RoleWorker})
	issue("reader", "auditor", ledger.RoleBinding{NamespacePattern: "ns", Role: ledger.RoleReader})
	issue("other-worker", "svc-other", ledger.RoleBinding{NamespacePattern: "other", Role: ledger.RoleWorker})
	issue("no-roles", "nobody")

	_, secret, err := b.Store.CreateToken(ctx, "svc-ns", "revoked", 0, "test")
	require.NoError(t, err)
	id, _, err := ledger.ParseToken(secret)
	require.NoError(t, err)
	_, err = b.Store.RevokeToken(ctx, id, "test")
	require.NoError(t, err)
	tokens["revoked"] = secret
	_, secret, err = b.Store.CreateToken(ctx, "svc-ns", "expired", time.Millisecond, "test")
	require.NoError(t, err)
	tokens["expired"] = secret
	tokens["bad token"] = "ldg_0123456789abcdef_not-the-secret"
	tokens["wrong secret"] = tokens["worker"][:len(tokens["worker"])-4] + "AAAA"

	// Every caller comes from the same in-memory address, and the matrix
	// fails authentication far more than a source may (see
	// TestIsolationFailedAuthLimitedPerSource): no limit here.
	auth := server.NewAuth(b.Store, server.AuthConfig{RefreshInterval: 100 * time.Millisecond, FailedAuthLimit: server.Rate{PerSecond: -1},
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, auth.Load(ctx))
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- auth.Run(runCtx) }()
	t.Cleanup(func() { stop(); require.NoError(t, <-ran) })

	srv, err := server.New(b.Store, server.Config{Logger: slog.New(slog.DiscardHandler), Auth: auth})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := ledgertest.Dial(t, lis)
	t.Cleanup(func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
		require.NoError(t, <-served)
	})
	time.Sleep(5 * time.Millisecond) // the expired token's millisecond is over
	return authBundle{ledger: b, conn: conn, lis: lis, auth: auth, tokens: tokens}
}

func as(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// counts is the number of rows of each table, to show that a refused call
// changed nothing. The audit events of revoked and expired tokens presented
// with their secret are left out: they record the refusal itself.
func counts(t *testing.T, b ledgertest.Bundle) string {
	t.Helper()
	var entries, events, namespaces, tokens, bindings int
	require.NoError(t, b.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM entries), (SELECT count(*) FROM events WHERE kind <> 'credential_refused'), (SELECT count(*) FROM namespaces),
		(SELECT count(*) FROM api_tokens), (SELECT count(*) FROM role_bindings)`).Scan(&entries, &events, &namespaces, &tokens, &bindings))
	return fmt.Sprintf("entries %d events %d namespaces %d tokens %d bindings %d", entries, events, namespaces, tokens, bindings)
}

// TestAuthorizationMatrix calls every RPC as every kind of caller: each
// gets exactly the expected code; refused calls change nothing and say
// nothing about the key.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	ctx := context.Background()
	client := ledgerv1.NewLedgerServiceClient(b.conn)
	admin := ledgerv1.NewLedgerAdminServiceClient(b.conn)

	// A key that exists, held by the worker, and the namespace "ns".
	held, err := client.Reserve(as(ctx, b.tokens["worker"]), &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	require.NotNil(t, held.GetAcquired())

	type rpc struct {
		name string
		call func(ctx context.Context, caller string) error
		// allowed lists the callers allowed, and the code each gets.
		allowed map[string]codes.Code
	}
	worker := func(code codes.Code) map[string]codes.Code {
		return map[string]codes.Code{"worker": code, "platform-admin": code}
	}
	reader := func(code codes.Code) map[string]codes.Code {
		return map[string]codes.Code{"reader": code, "admin": code, "platform-admin": code}
	}
	adminOnly := func(code codes.Code) map[string]codes.Code {
		return map[string]codes.Code{"admin": code, "platform-admin": code}
	}
	platform := func(code codes.Code) map[string]codes.Code { return map[string]codes.Code{"platform-admin": code} }
	err2 := func(_ any, err error) error { return err }
	rpcs := []rpc{
		{"Reserve", func(ctx context.Context, caller string) error {
			return err2(client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "new-" + caller, Owner: "w"}))
		}, worker(codes.OK)},
		{"Heartbeat", func(ctx context.Context, _ string) error {
			return err2(client.Heartbeat(ctx, &ledgerv1.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: 99}))
		}, worker(codes.Aborted)},
		{"Complete", func(ctx context.Context, _ string) error {
			return err2(client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 99}))
		}, worker(codes.Aborted)},
		{"Fail", func(ctx context.Context, _ string) error {
			return err2(client.Fail(ctx, &ledgerv1.FailRequest{Namespace: "ns", Key: "k", FencingToken: 99, Error: &ledgerv1.WorkError{Message: "m"}}))
		}, worker(codes.Aborted)},
		{"Release", func(ctx context.Context, _ string) error {
			return err2(client.Release(ctx, &ledgerv1.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: 99}))
		}, worker(codes.Aborted)},
		{"Lookup", func(ctx context.Context, _ string) error {
			return err2(client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"}))
		}, map[string]codes.Code{"worker": codes.OK, "reader": codes.OK, "admin": codes.OK, "platform-admin": codes.OK}},
		{"ReserveBatch", func(ctx context.Context, caller string) error {
			return err2(client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "ns", Owner: "w",
				Items: []*ledgerv1.ReserveBatchItem{{Key: "batch-" + caller}}}))
		}, worker(codes.OK)},
		{"CompleteBatch", func(ctx context.Context, _ string) error {
			return err2(client.CompleteBatch(ctx, &ledgerv1.CompleteBatchRequest{Namespace: "ns",
				Items: []*ledgerv1.CompleteBatchItem{{Key: "k", FencingToken: 99}}}))
		}, worker(codes.OK)},
		{"LookupBatch", func(ctx context.Context, _ string) error {
			return err2(client.LookupBatch(ctx, &ledgerv1.LookupBatchRequest{Namespace: "ns", Keys: []string{"k"}}))
		}, map[string]codes.Code{"worker": codes.OK, "reader": codes.OK, "admin": codes.OK, "platform-admin": codes.OK}},
		{"ListEntries", func(ctx context.Context, _ string) error {
			return err2(admin.ListEntries(ctx, &ledgerv1.ListEntriesRequest{Namespace: "ns"}))
		}, reader(codes.OK)},
		{"GetHistory", func(ctx context.Context, _ string) error {
			return err2(admin.GetHistory(ctx, &ledgerv1.GetHistoryRequest{Namespace: "ns", Key: "k"}))
		}, reader(codes.OK)},
		{"ListEvents", func(ctx context.Context, _ string) error {
			return err2(admin.ListEvents(ctx, &ledgerv1.ListEventsRequest{Namespace: "ns"}))
		}, reader(codes.OK)},
		{"GetNamespace", func(ctx context.Context, _ string) error {
			return err2(admin.GetNamespace(ctx, &ledgerv1.GetNamespaceRequest{Name: "ns"}))
		}, reader(codes.OK)},
		{"ForceRelease", func(ctx context.Context, _ string) error {
			return err2(admin.ForceRelease(ctx, &ledgerv1.ForceReleaseRequest{Namespace: "ns", Key: "absent", Reason: "r"}))
		}, adminOnly(codes.NotFound)},
		{"ResetKey", func(ctx context.Context, _ string) error {
			return err2(admin.ResetKey(ctx, &ledgerv1.ResetKeyRequest{Namespace: "ns", Key: "absent", Reason: "r"}))
		}, adminOnly(codes.NotFound)},
		{"PurgeExpired", func(ctx context.Context, _ string) error {
			return err2(admin.PurgeExpired(ctx, &ledgerv1.PurgeExpiredRequest{Namespace: "ns", Reason: "r"}))
		}, adminOnly(codes.OK)},
		{"CreateNamespace", func(ctx context.Context, _ string) error {
			return err2(admin.CreateNamespace(ctx, &ledgerv1.CreateNamespaceRequest{Name: "ns", Reason: "r"}))
		}, adminOnly(codes.AlreadyExists)},
		{"UpdateNamespace", func(ctx context.Context, _ string) error {
			return err2(admin.UpdateNamespace(ctx, &ledgerv1.UpdateNamespaceRequest{Name: "ns", Reason: "r",
				Settings: &ledgerv1.NamespaceSettings{MaxAttempts: proto.Int32(0)}}))
		}, adminOnly(codes.OK)},
		{"ListNamespaces", func(ctx context.Context, _ string) error {
			return err2(admin.ListNamespaces(ctx, &ledgerv1.ListNamespacesRequest{}))
		}, platform(codes.OK)},
		{"WhoAmI", func(ctx context.Context, _ string) error {
			return err2(admin.WhoAmI(ctx, &ledgerv1.WhoAmIRequest{}))
		}, map[string]codes.Code{"worker": codes.OK, "reader": codes.OK, "admin": codes.OK, "platform-admin": codes.OK,
			"other-worker": codes.OK, "no-roles": codes.OK}},
		{"CreateToken", func(ctx context.Context, _ string) error {
			return err2(admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{Principal: "p", Reason: "r"}))
		}, platform(codes.OK)},
		{"ListTokens", func(ctx context.Context, _ string) error {
			return err2(admin.ListTokens(ctx, &ledgerv1.ListTokensRequest{}))
		}, platform(codes.OK)},
		{"RevokeToken", func(ctx context.Context, _ string) error {
			return err2(admin.RevokeToken(ctx, &ledgerv1.RevokeTokenRequest{Id: "absent", Reason: "r"}))
		}, platform(codes.NotFound)},
		{"GrantRole", func(ctx context.Context, _ string) error {
			return err2(admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Reason: "r",
				Binding: &ledgerv1.RoleBinding{Principal: "p", NamespacePattern: "ns", Role: ledgerv1.Role_ROLE_READER}}))
		}, platform(codes.OK)},
		{"RevokeRole", func(ctx context.Context, _ string) error {
			return err2(admin.RevokeRole(ctx, &ledgerv1.RevokeRoleRequest{Reason: "r",
				Binding: &ledgerv1.RoleBinding{Principal: "absent", NamespacePattern: "ns", Role: ledgerv1.Role_ROLE_READER}}))
		}, platform(codes.NotFound)},
		{"ListRoleBindings", func(ctx context.Context, _ string) error {
			return err2(admin.ListRoleBindings(ctx, &ledgerv1.ListRoleBindingsRequest{}))
		}, platform(codes.OK)},
	}
	// Every RPC of both services is in the matrix.
	require.Len(t, rpcs, len(ledgerv1.LedgerService_ServiceDesc.Methods)+len(ledgerv1.LedgerAdminService_ServiceDesc.Methods))

	unauthenticated := []string{"no credentials", "bad token", "wrong secret", "expired", "revoked"}
	authenticated := []string{"other-worker", "no-roles", "reader", "worker", "admin", "platform-admin"}
	for _, r := range rpcs {
		for _, caller := range append(unauthenticated, authenticated...) {
			want, allowed := r.allowed[caller]
			switch {
			case allowed:
			case strings.Contains(strings.Join(unauthenticated, ","), caller):
				want = codes.Unauthenticated
			default:
				want = codes.PermissionDenied
			}
			before := counts(t, b.ledger)
			err := r.call(as(ctx, b.tokens[caller]), caller)
			require.Equal(t, want, status.Code(err), "%s as %s: %v", r.name, caller, err)
			if want == codes.Unauthenticated || want == codes.PermissionDenied {
				require.Equal(t, before, counts(t, b.ledger), "%s as %s changed the database", r.name, caller)
			}
		}
	}

	// A refused Lookup says the same whether the key exists or not (under
	// the same request id, which the error carries).
	sameID := metadata.AppendToOutgoingContext(ctx, server.RequestIDKey, "probe")
	_, errExisting := client.Lookup(as(sameID, b.tokens["other-worker"]), &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	_, errAbsent := client.Lookup(as(sameID, b.tokens["other-worker"]), &ledgerv1.LookupRequest{Namespace: "ns", Key: "absent"})
	require.Equal(t, status.Convert(errExisting).Proto(), status.Convert(errAbsent).Proto())

	// Health needs no credentials.
	health, err := healthpb.NewHealthClient(b.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, health.GetStatus())
}

// TestAuditRecordsThePrincipal: events carry the authenticated principal.
func TestAuditRecordsThePrincipal(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	ctx := context.Background()
	client := ledgerv1.NewLedgerServiceClient(b.conn)
	res, err := client.Reserve(as(ctx, b.tokens["worker"]), &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "host-1"})
	require.NoError(t, err)
	_, err = ledgerv1.NewLedgerAdminServiceClient(b.conn).ForceRelease(as(ctx, b.tokens["admin"]),
		&ledgerv1.ForceReleaseRequest{Namespace: "ns", Key: "k", Reason: "test", FencingToken: res.GetAcquired().GetFencingToken()})
	require.NoError(t, err)
	var callers []string
	rows, err := b.ledger.Pool.Query(ctx, `SELECT caller FROM events WHERE namespace = 'ns' AND key = 'k' ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var caller string
		require.NoError(t, rows.Scan(&caller))
		callers = append(callers, caller)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"svc-ns", "ops@ns"}, callers)

	who, err := ledgerv1.NewLedgerAdminServiceClient(b.conn).WhoAmI(as(ctx, b.tokens["admin"]), &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "ops@ns", who.GetPrincipal())
	require.Equal(t, ledgerv1.Role_ROLE_ADMIN, who.GetBindings()[0].GetRole())
}

// TestIsolationTokenLifecycle: a created token works at once; a revoked one stops
// working at once on the replica that revoked it and within the refresh
// interval on another.
func TestIsolationTokenLifecycle(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	ctx := context.Background()
	admin := ledgerv1.NewLedgerAdminServiceClient(b.conn)
	created, err := admin.CreateToken(as(ctx, b.tokens["platform-admin"]), &ledgerv1.CreateTokenRequest{Principal: "svc-ns", Reason: "new worker"})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(created.GetSecret(), "ldg_"))
	who, err := admin.WhoAmI(as(ctx, created.GetSecret()), &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "svc-ns", who.GetPrincipal())

	var hash []byte
	require.NoError(t, b.ledger.Pool.QueryRow(ctx, `SELECT secret_hash FROM api_tokens WHERE id = $1`, created.GetToken().GetId()).Scan(&hash))
	require.Len(t, hash, 32)
	require.NotContains(t, created.GetSecret(), string(hash), "only a hash is stored")

	// A second replica, with its own credential cache.
	replica := server.NewAuth(b.ledger.Store, server.AuthConfig{RefreshInterval: 100 * time.Millisecond})
	require.NoError(t, replica.Load(ctx))
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- replica.Run(runCtx) }()
	defer func() { stop(); require.NoError(t, <-ran) }()
	srv, err := server.New(b.ledger.Store, server.Config{Logger: slog.New(slog.DiscardHandler), Auth: replica})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Shutdown(ctx); require.NoError(t, <-served) }()
	replicaAdmin := ledgerv1.NewLedgerAdminServiceClient(ledgertest.Dial(t, lis))
	_, err = replicaAdmin.WhoAmI(as(ctx, created.GetSecret()), &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)

	_, err = admin.RevokeToken(as(ctx, b.tokens["platform-admin"]), &ledgerv1.RevokeTokenRequest{Id: created.GetToken().GetId(), Reason: "leaked"})
	require.NoError(t, err)
	_, err = admin.WhoAmI(as(ctx, created.GetSecret()), &ledgerv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "refused at once where it was revoked")
	require.Eventually(t, func() bool {
		_, err := replicaAdmin.WhoAmI(as(ctx, created.GetSecret()), &ledgerv1.WhoAmIRequest{})
		return status.Code(err) == codes.Unauthenticated
	}, time.Minute, 20*time.Millisecond, "refused by the other replica after its refresh")

	list, err := admin.ListTokens(as(ctx, b.tokens["platform-admin"]), &ledgerv1.ListTokensRequest{})
	require.NoError(t, err)
	var revoked *ledgerv1.Token
	for _, token := range list.GetTokens() {
		if token.GetId() == created.GetToken().GetId() {
			revoked = token
		}
	}
	require.NotNil(t, revoked.GetRevokedAt())
	require.Equal(t, "root", revoked.GetRevokedBy())
}

// TestGoClientToken: the Go client authenticates with WithToken.
func TestGoClientToken(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return b.lis.DialContext(ctx) })
	client, err := ledgerclient.New("passthrough:///bufconn", ledgerclient.WithInsecure(),
		ledgerclient.WithToken(b.tokens["worker"]), ledgerclient.WithDialOptions(dial))
	require.NoError(t, err)
	defer client.Close()
	result, err := client.Do(context.Background(), "ns", "with-token", func(context.Context) ([]byte, error) { return []byte("ok"), nil })
	require.NoError(t, err)
	require.Equal(t, []byte("ok"), result.Value)

	denied, err := ledgerclient.New("passthrough:///bufconn", ledgerclient.WithInsecure(),
		ledgerclient.WithToken(b.tokens["reader"]), ledgerclient.WithDialOptions(dial))
	require.NoError(t, err)
	defer denied.Close()
	_, err = denied.Do(context.Background(), "ns", "k2", func(context.Context) ([]byte, error) { return nil, nil })
	require.ErrorIs(t, err, ledgerclient.ErrPermissionDenied)

	anonymous, err := ledgerclient.New("passthrough:///bufconn", ledgerclient.WithInsecure(), ledgerclient.WithDialOptions(dial))
	require.NoError(t, err)
	defer anonymous.Close()
	_, err = anonymous.Do(context.Background(), "ns", "k3", func(context.Context) ([]byte, error) { return nil, nil })
	require.ErrorIs(t, err, ledgerclient.ErrUnauthenticated)
}

// TestPlatformEvents: the audit events of tokens and role bindings are
// listed with an empty namespace, by platform admins only.
func TestPlatformEvents(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	ctx := context.Background()
	admin := ledgerv1.NewLedgerAdminServiceClient(b.conn)
	events, err := admin.ListEvents(as(ctx, b.tokens["platform-admin"]), &ledgerv1.ListEventsRequest{})
	require.NoError(t, err)
	kinds := map[ledgerv1.EventKind]int{}
	for _, e := range events.GetEvents() {
		kinds[e.GetKind()]++
		require.Empty(t, e.GetNamespace())
	}
	require.Equal(t, 8, kinds[ledgerv1.EventKind_EVENT_KIND_TOKEN_CREATED], "setupAuth issued 8 tokens")
	require.Equal(t, 1, kinds[ledgerv1.EventKind_EVENT_KIND_TOKEN_REVOKED])
	require.Equal(t, 5, kinds[ledgerv1.EventKind_EVENT_KIND_ROLE_GRANTED])
	_, err = admin.ListEvents(as(ctx, b.tokens["admin"]), &ledgerv1.ListEventsRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	_, err = admin.ListEntries(as(ctx, b.tokens["admin"]), &ledgerv1.ListEntriesRequest{Namespace: "ns",
		UpdatedAfter: &timestamppb.Timestamp{Seconds: 1 << 62}})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "updated_after")
}

// TestIsolationChangesApplyAtOnceDuringRefreshes: a token created or
// revoked through a replica works, or is refused, on that replica at once,
// even while refreshes run back to back (one that read the tables before
// the change must not install its older copy after it).
func TestIsolationChangesApplyAtOnceDuringRefreshes(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{})
	ctx := context.Background()
	_, root, err := b.Store.Bootstrap(ctx, "root")
	require.NoError(t, err)
	auth := server.NewAuth(b.Store, server.AuthConfig{RefreshInterval: time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		FailedAuthLimit: server.Rate{PerSecond: -1}}) // the revoked tokens below would be limited
	require.NoError(t, auth.Load(ctx))
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- auth.Run(runCtx) }()
	defer func() { stop(); require.NoError(t, <-ran) }()
	conn, _ := serveWithAuthOf(t, b.Store, auth)
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)

	for i := range 100 {
		created, err := admin.CreateToken(as(ctx, root), &ledgerv1.CreateTokenRequest{Principal: "svc", Reason: "r"})
		require.NoError(t, err)
		_, err = admin.WhoAmI(as(ctx, created.GetSecret()), &ledgerv1.WhoAmIRequest{})
		require.NoError(t, err, "round %d: a token created here works here at once", i)
		_, err = admin.RevokeToken(as(ctx, root), &ledgerv1.RevokeTokenRequest{Id: created.GetToken().GetId(), Reason: "r"})
		require.NoError(t, err)
		_, err = admin.WhoAmI(as(ctx, created.GetSecret()), &ledgerv1.WhoAmIRequest{})
		require.Equal(t, codes.Unauthenticated, status.Code(err), "round %d: a token revoked here is refused here at once", i)
	}
}

// serveWithAuthOf serves store in memory with auth.
func serveWithAuthOf(t *testing.T, store *ledger.Store, auth *server.Auth) (*grpc.ClientConn, *server.Server) {
	t.Helper()
	srv, err := server.New(store, server.Config{Logger: slog.New(slog.DiscardHandler), Auth: auth})
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
