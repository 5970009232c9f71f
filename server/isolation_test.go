package server_test

// The isolation suite: the tests named TestIsolation* encode the threat
// model of docs/security.md, a case per promise, and the weaknesses the
// tenant boundary was hardened against. `make test` runs them with the
// rest; `make test-isolation` runs the suite alone.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// twoPorts is one ledgerd with authentication, reached over gRPC and over
// its HTTP port (the gateway in-process, as `ledgerd serve` wires it).
type twoPorts struct {
	authBundle
	grpc *grpc.ClientConn
	http string // base URL
}

func setupTwoPorts(t *testing.T) twoPorts {
	t.Helper()
	b := setupAuth(t)
	srv, err := server.New(b.ledger.Store, server.Config{Logger: slog.New(slog.DiscardHandler), Auth: b.auth})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	url := serveBothPorts(t, srv, lis, server.HTTPConfig{})
	return twoPorts{authBundle: b, grpc: ledgertest.Dial(t, lis), http: url}
}

// callGRPC calls method with req as caller (a token of setupAuth's, or ""
// for none) and returns the status.
func (p twoPorts) callGRPC(t *testing.T, method protoreflect.MethodDescriptor, req proto.Message, token string) *status.Status {
	t.Helper()
	reply, err := protoregistry.GlobalTypes.FindMessageByName(method.Output().FullName())
	require.NoError(t, err)
	fullMethod := "/" + string(method.Parent().FullName()) + "/" + string(method.Name())
	err = p.grpc.Invoke(as(context.Background(), token), fullMethod, req, reply.New().Interface())
	return status.Convert(err)
}

// callHTTP POSTs req as JSON to the HTTP port and returns the HTTP status
// and the gRPC code of the answer.
func (p twoPorts) callHTTP(t *testing.T, method protoreflect.MethodDescriptor, req proto.Message, token string) (int, codes.Code) {
	t.Helper()
	body, err := protojson.Marshal(req)
	require.NoError(t, err)
	httpReq, err := http.NewRequest(http.MethodPost, p.http+"/"+string(method.Parent().FullName())+"/"+string(method.Name()), bytes.NewReader(body))
	require.NoError(t, err)
	httpReq.Header.Set("Content-Type", "application/json")
	if token != "" {
		httpReq.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(httpReq)
	require.NoError(t, err)
	defer res.Body.Close()
	answer, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	if res.StatusCode == http.StatusOK {
		return res.StatusCode, codes.OK
	}
	var rpcStatus struct {
		Code codes.Code `json:"code"`
	}
	require.NoError(t, json.Unmarshal(answer, &rpcStatus), "%s", answer)
	return res.StatusCode, rpcStatus.Code
}

// isolationRequests is a request for every RPC of both services, in the
// namespace "ns" that setupAuth's admin, worker and reader are bound to.
// Each may be sent any number of times: a repeat gets the same code.
func isolationRequests() map[string]proto.Message {
	return map[string]proto.Message{
		"Reserve":       &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k-new", Owner: "w"},
		"Heartbeat":     &ledgerv1.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: 99},
		"Complete":      &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 99},
		"Fail":          &ledgerv1.FailRequest{Namespace: "ns", Key: "k", FencingToken: 99, Error: &ledgerv1.WorkError{Message: "m"}},
		"Release":       &ledgerv1.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: 99},
		"Lookup":        &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"},
		"ReserveBatch":  &ledgerv1.ReserveBatchRequest{Namespace: "ns", Owner: "w", Items: []*ledgerv1.ReserveBatchItem{{Key: "k-batch"}}},
		"CompleteBatch": &ledgerv1.CompleteBatchRequest{Namespace: "ns", Items: []*ledgerv1.CompleteBatchItem{{Key: "k", FencingToken: 99}}},
		"LookupBatch":   &ledgerv1.LookupBatchRequest{Namespace: "ns", Keys: []string{"k"}},

		"ListEntries":      &ledgerv1.ListEntriesRequest{Namespace: "ns"},
		"GetHistory":       &ledgerv1.GetHistoryRequest{Namespace: "ns", Key: "k"},
		"ListEvents":       &ledgerv1.ListEventsRequest{Namespace: "ns"},
		"GetNamespace":     &ledgerv1.GetNamespaceRequest{Name: "ns"},
		"ForceRelease":     &ledgerv1.ForceReleaseRequest{Namespace: "ns", Key: "absent", Reason: "r"},
		"ResetKey":         &ledgerv1.ResetKeyRequest{Namespace: "ns", Key: "absent", Reason: "r"},
		"PurgeExpired":     &ledgerv1.PurgeExpiredRequest{Namespace: "ns", Reason: "r"},
		"CreateNamespace":  &ledgerv1.CreateNamespaceRequest{Name: "ns", Reason: "r"},
		"UpdateNamespace":  &ledgerv1.UpdateNamespaceRequest{Name: "ns", Reason: "r", Settings: &ledgerv1.NamespaceSettings{MaxAttempts: proto.Int32(0)}},
		"ListNamespaces":   &ledgerv1.ListNamespacesRequest{},
		"WhoAmI":           &ledgerv1.WhoAmIRequest{},
		"CreateToken":      &ledgerv1.CreateTokenRequest{Principal: "p", Reason: "r"},
		"ListTokens":       &ledgerv1.ListTokensRequest{},
		"RevokeToken":      &ledgerv1.RevokeTokenRequest{Id: "absent", Reason: "r"},
		"GrantRole":        &ledgerv1.GrantRoleRequest{Reason: "r", Binding: &ledgerv1.RoleBinding{Principal: "p", NamespacePattern: "ns", Role: ledgerv1.Role_ROLE_READER}},
		"RevokeRole":       &ledgerv1.RevokeRoleRequest{Reason: "r", Binding: &ledgerv1.RoleBinding{Principal: "absent", NamespacePattern: "ns", Role: ledgerv1.Role_ROLE_READER}},
		"ListRoleBindings": &ledgerv1.ListRoleBindingsRequest{},
	}
}

// isolationMethods returns every RPC of both services.
func isolationMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var methods []protoreflect.MethodDescriptor
	for _, file := range []protoreflect.FileDescriptor{ledgerv1.File_ledger_v1_ledger_proto, ledgerv1.File_ledger_v1_admin_proto} {
		services := file.Services()
		for i := range services.Len() {
			for j := range services.Get(i).Methods().Len() {
				methods = append(methods, services.Get(i).Methods().Get(j))
			}
		}
	}
	require.Len(t, methods, len(ledgerv1.LedgerService_ServiceDesc.Methods)+len(ledgerv1.LedgerAdminService_ServiceDesc.Methods))
	return methods
}

// TestIsolationPortsDecideAlike: the HTTP port and the gRPC port make the
// same decision for every RPC and every kind of caller (one authorization
// path: the gateway calls the gRPC server), and a refusal on either port
// changes nothing.
func TestIsolationPortsDecideAlike(t *testing.T) {
	t.Parallel()
	p := setupTwoPorts(t)
	held, err := ledgerv1.NewLedgerServiceClient(p.grpc).Reserve(as(context.Background(), p.tokens["worker"]),
		&ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	require.NotNil(t, held.GetAcquired())

	requests := isolationRequests()
	callers := []string{"", "bad token", "wrong secret", "expired", "revoked", "other-worker", "no-roles", "reader", "worker", "admin", "platform-admin"}
	unauthenticated := map[string]bool{"": true, "bad token": true, "wrong secret": true, "expired": true, "revoked": true}
	events := eventCount(t, p)
	refusals := 0
	for _, method := range isolationMethods(t) {
		req, ok := requests[string(method.Name())]
		require.True(t, ok, "no request for %s: add it to isolationRequests", method.Name())
		for _, caller := range callers {
			before := counts(t, p.ledger)
			grpcStatus := p.callGRPC(t, method, req, p.tokens[caller])
			httpStatus, httpCode := p.callHTTP(t, method, req, p.tokens[caller])
			require.Equal(t, grpcStatus.Code(), httpCode, "%s as %q: gRPC %v, HTTP %d", method.Name(), caller, grpcStatus, httpStatus)
			require.Equal(t, runtime.HTTPStatusFromCode(httpCode), httpStatus, "%s as %q", method.Name(), caller)
			if unauthenticated[caller] {
				require.Equal(t, codes.Unauthenticated, grpcStatus.Code(), "%s as %q", method.Name(), caller)
			}
			// No RPC deletes audit events, whoever calls it.
			now := eventCount(t, p)
			require.GreaterOrEqual(t, now, events, "%s as %q deleted events", method.Name(), caller)
			events = now
			if code := grpcStatus.Code(); code == codes.Unauthenticated || code == codes.PermissionDenied {
				refusals++
				require.Equal(t, before, counts(t, p.ledger), "%s as %q was refused but changed the database", method.Name(), caller)
			}
		}
	}
	// Every RPC is refused to the five unauthenticated callers and to the
	// principal without roles (WhoAmI excepted), and to more besides.
	require.Greater(t, refusals, 6*len(requests)-1)
}

func eventCount(t *testing.T, p twoPorts) int {
	t.Helper()
	var n int
	require.NoError(t, p.ledger.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n))
	return n
}

// TestIsolationRefusalsSayNothing: a caller refused in a namespace (no
// credentials, a worker of another namespace, a principal without roles)
// gets the same answer, on both ports, whether the namespace and the key
// exist or not.
func TestIsolationRefusalsSayNothing(t *testing.T) {
	t.Parallel()
	p := setupTwoPorts(t)
	_, err := ledgerv1.NewLedgerServiceClient(p.grpc).Reserve(as(context.Background(), p.tokens["worker"]),
		&ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)

	probes := map[string][2]proto.Message{ // existing, absent
		"Lookup":       {&ledgerv1.LookupRequest{Namespace: "ns", Key: "k"}, &ledgerv1.LookupRequest{Namespace: "nx", Key: "absent"}},
		"Reserve":      {&ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "x"}, &ledgerv1.ReserveRequest{Namespace: "nx", Key: "k", Owner: "x"}},
		"GetHistory":   {&ledgerv1.GetHistoryRequest{Namespace: "ns", Key: "k"}, &ledgerv1.GetHistoryRequest{Namespace: "nx", Key: "absent"}},
		"ListEntries":  {&ledgerv1.ListEntriesRequest{Namespace: "ns"}, &ledgerv1.ListEntriesRequest{Namespace: "nx"}},
		"GetNamespace": {&ledgerv1.GetNamespaceRequest{Name: "ns"}, &ledgerv1.GetNamespaceRequest{Name: "nx"}},
	}
	methods := map[string]protoreflect.MethodDescriptor{}
	for _, m := range isolationMethods(t) {
		methods[string(m.Name())] = m
	}
	for name, pair := range probes {
		for _, caller := range []string{"", "revoked", "other-worker", "no-roles"} {
			existing := p.callGRPC(t, methods[name], pair[0], p.tokens[caller])
			absent := p.callGRPC(t, methods[name], pair[1], p.tokens[caller])
			require.Contains(t, []codes.Code{codes.Unauthenticated, codes.PermissionDenied}, existing.Code(), "%s as %q", name, caller)
			// The messages name the namespace asked for; nothing else differs.
			require.Equal(t, existing.Code(), absent.Code(), "%s as %q", name, caller)
			require.Equal(t, strings.ReplaceAll(existing.Message(), `"ns"`, `"nx"`), absent.Message(), "%s as %q", name, caller)
			existingHTTP, existingCode := p.callHTTP(t, methods[name], pair[0], p.tokens[caller])
			absentHTTP, absentCode := p.callHTTP(t, methods[name], pair[1], p.tokens[caller])
			require.Equal(t, [2]int{existingHTTP, int(existingCode)}, [2]int{absentHTTP, int(absentCode)}, "%s as %q over HTTP", name, caller)
		}
	}
}

// TestIsolationCompromisedWorker walks the threat model's row of a
// compromised worker token of namespace team-a-1: what it can do there, what
// it cannot do there or anywhere else, that what it did is attributed to
// its principal, and that revoking it stops it.
func TestIsolationCompromisedWorker(t *testing.T) {
	t.Parallel()
	b := setupTenants(t, ledger.Config{})
	ctx := context.Background()
	workerCtx := as(ctx, b.tokens["worker"])
	client := ledgerv1.NewLedgerServiceClient(b.conn)
	admin := ledgerv1.NewLedgerAdminServiceClient(b.conn)

	// It can: reserve, complete (with a wrong result), fail, read results.
	held, err := client.Reserve(workerCtx, &ledgerv1.ReserveRequest{Namespace: "team-a-1", Key: "k", Owner: "evil"})
	require.NoError(t, err)
	_, err = client.Complete(workerCtx, &ledgerv1.CompleteRequest{Namespace: "team-a-1", Key: "k",
		FencingToken: held.GetAcquired().GetFencingToken(), Result: []byte("wrong")})
	require.NoError(t, err)
	looked, err := client.Lookup(workerCtx, &ledgerv1.LookupRequest{Namespace: "team-a-1", Key: "k"})
	require.NoError(t, err)
	require.Equal(t, []byte("wrong"), looked.GetEntry().GetResult())

	// It cannot: act outside its namespaces, use an admin action, change
	// settings, mint tokens or grant itself roles. Each refusal changes
	// nothing.
	refused := map[string]func(context.Context) error{
		"Reserve elsewhere": func(ctx context.Context) error {
			_, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "team-b-1", Key: "k", Owner: "evil"})
			return err
		},
		"Lookup elsewhere": func(ctx context.Context) error {
			_, err := client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "team-b-1", Key: "k"})
			return err
		},
		"ResetKey": func(ctx context.Context) error {
			_, err := admin.ResetKey(ctx, &ledgerv1.ResetKeyRequest{Namespace: "team-a-1", Key: "k", Reason: "r"})
			return err
		},
		"ForceRelease": func(ctx context.Context) error {
			_, err := admin.ForceRelease(ctx, &ledgerv1.ForceReleaseRequest{Namespace: "team-a-1", Key: "k", Reason: "r"})
			return err
		},
		"PurgeExpired": func(ctx context.Context) error {
			_, err := admin.PurgeExpired(ctx, &ledgerv1.PurgeExpiredRequest{Namespace: "team-a-1", Reason: "r"})
			return err
		},
		"UpdateNamespace": func(ctx context.Context) error {
			_, err := admin.UpdateNamespace(ctx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r",
				Settings: &ledgerv1.NamespaceSettings{MaxAttempts: proto.Int32(1)}})
			return err
		},
		"ListEvents": func(ctx context.Context) error {
			_, err := admin.ListEvents(ctx, &ledgerv1.ListEventsRequest{Namespace: "team-a-1"})
			return err
		},
		"CreateToken": func(ctx context.Context) error {
			_, err := admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{Principal: "svc-team-a", Reason: "r"})
			return err
		},
		"GrantRole": func(ctx context.Context) error {
			_, err := admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Reason: "r", Binding: &ledgerv1.RoleBinding{
				Principal: "svc-team-a", NamespacePattern: "*", Role: ledgerv1.Role_ROLE_PLATFORM_ADMIN}})
			return err
		},
	}
	for name, call := range refused {
		before := counts(t, b.ledger)
		require.Equal(t, codes.PermissionDenied, status.Code(call(workerCtx)), name)
		require.Equal(t, before, counts(t, b.ledger), "%s was refused but changed the database", name)
	}

	// What it did is in the audit trail under its principal.
	var callers []string
	rows, err := b.ledger.Pool.Query(ctx, `SELECT DISTINCT caller FROM events WHERE namespace = 'team-a-1' AND key = 'k'`)
	require.NoError(t, err)
	callers, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"svc-team-a"}, callers)

	// Revoked, it is refused at once, and the holder's next use is audited.
	id, _, err := ledger.ParseToken(b.tokens["worker"])
	require.NoError(t, err)
	rootCtx, root := b.admin(ctx, "platform-admin")
	_, err = root.RevokeToken(rootCtx, &ledgerv1.RevokeTokenRequest{Id: id, Reason: "compromised"})
	require.NoError(t, err)
	_, err = client.Reserve(workerCtx, &ledgerv1.ReserveRequest{Namespace: "team-a-1", Key: "k2", Owner: "evil"})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, b.ledger.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE kind = 'credential_refused' AND detail->>'token_id' = $1`, id).Scan(&n))
		return n == 1
	}, time.Minute, 20*time.Millisecond, "the revoked token's use is an audit event")
}

// TestIsolationTenantAdmin walks the threat model's row of a namespace
// admin (bound to team-a-*): it tunes and operates its own namespaces, and
// cannot widen its share of the service, erase the record of what it did,
// or reach beyond its pattern.
func TestIsolationTenantAdmin(t *testing.T) {
	t.Parallel()
	// A floor of 10ms, so that the sweep below needs no waiting for days.
	b := setupTenants(t, ledger.Config{Limits: ledger.Limits{MinEventRetention: 10 * time.Millisecond}})
	ctx := context.Background()
	adminCtx, admin := b.admin(ctx, "tenant-admin")
	client := ledgerv1.NewLedgerServiceClient(b.conn)

	// It can: tune its namespace within the bounds, create a namespace its
	// pattern covers, and reset, force-release and purge in its namespaces.
	_, err := admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "tune",
		Settings: &ledgerv1.NamespaceSettings{Retention: durationpb.New(20 * time.Millisecond), EventRetention: durationpb.New(20 * time.Millisecond), MaxAttempts: proto.Int32(3)}})
	require.NoError(t, err)
	_, err = admin.CreateNamespace(adminCtx, &ledgerv1.CreateNamespaceRequest{Name: "team-a-2", Reason: "new pipeline"})
	require.NoError(t, err)
	held, err := client.Reserve(as(ctx, b.tokens["worker"]), &ledgerv1.ReserveRequest{Namespace: "team-a-1", Key: "k", Owner: "w"})
	require.NoError(t, err)
	_, err = admin.ForceRelease(adminCtx, &ledgerv1.ForceReleaseRequest{Namespace: "team-a-1", Key: "k", Reason: "stuck",
		FencingToken: held.GetAcquired().GetFencingToken()})
	require.NoError(t, err)
	_, err = admin.ResetKey(adminCtx, &ledgerv1.ResetKeyRequest{Namespace: "team-a-1", Key: "k", Reason: "re-run"})
	require.NoError(t, err)
	_, err = admin.PurgeExpired(adminCtx, &ledgerv1.PurgeExpiredRequest{Namespace: "team-a-1", Reason: "cleanup"})
	require.NoError(t, err)

	// It cannot: set a platform-owned limit, shorten event retention below
	// the floor or below retention, act outside its pattern, list the
	// namespaces, read the platform's events, or manage credentials.
	cannot := map[string]struct {
		code codes.Code
		call func() error
	}{
		"raise its quota": {codes.PermissionDenied, func() error {
			_, err := admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r",
				Settings: &ledgerv1.NamespaceSettings{MaxHeldLeases: proto.Int64(0)}})
			return err
		}},
		"event retention below the floor": {codes.InvalidArgument, func() error {
			_, err := admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r",
				Settings: &ledgerv1.NamespaceSettings{EventRetention: durationpb.New(time.Millisecond)}})
			return err
		}},
		"event retention below retention": {codes.InvalidArgument, func() error {
			_, err := admin.UpdateNamespace(adminCtx, &ledgerv1.UpdateNamespaceRequest{Name: "team-a-1", Reason: "r",
				Settings: &ledgerv1.NamespaceSettings{Retention: durationpb.New(time.Hour)}})
			return err
		}},
		"create outside its pattern": {codes.PermissionDenied, func() error {
			_, err := admin.CreateNamespace(adminCtx, &ledgerv1.CreateNamespaceRequest{Name: "team-ab", Reason: "r"})
			return err
		}},
		"reset outside its pattern": {codes.PermissionDenied, func() error {
			_, err := admin.ResetKey(adminCtx, &ledgerv1.ResetKeyRequest{Namespace: "team-b-1", Key: "k", Reason: "r"})
			return err
		}},
		"list the namespaces": {codes.PermissionDenied, func() error {
			_, err := admin.ListNamespaces(adminCtx, &ledgerv1.ListNamespacesRequest{})
			return err
		}},
		"read the platform's events": {codes.PermissionDenied, func() error {
			_, err := admin.ListEvents(adminCtx, &ledgerv1.ListEventsRequest{})
			return err
		}},
		"list tokens": {codes.PermissionDenied, func() error {
			_, err := admin.ListTokens(adminCtx, &ledgerv1.ListTokensRequest{})
			return err
		}},
		"mint a token": {codes.PermissionDenied, func() error {
			_, err := admin.CreateToken(adminCtx, &ledgerv1.CreateTokenRequest{Principal: "ops@team-a", Reason: "r"})
			return err
		}},
		"grant a role": {codes.PermissionDenied, func() error {
			_, err := admin.GrantRole(adminCtx, &ledgerv1.GrantRoleRequest{Reason: "r", Binding: &ledgerv1.RoleBinding{
				Principal: "svc-team-a", NamespacePattern: "team-b-*", Role: ledgerv1.Role_ROLE_WORKER}})
			return err
		}},
	}
	for name, c := range cannot {
		before, settings := counts(t, b.ledger), namespaceRow(t, b.ledger, "team-a-1")
		require.Equal(t, c.code, status.Code(c.call()), name)
		require.Equal(t, before, counts(t, b.ledger), "%s was refused but changed the database", name)
		require.Equal(t, settings, namespaceRow(t, b.ledger, "team-a-1"), name)
	}

	// Its admin actions outlive the namespace's event retention (20ms): the
	// sweeper deletes the worker's events, not the admin's.
	require.Contains(t, eventKinds(t, b.ledger, "team-a-1"), "reserved")
	time.Sleep(50 * time.Millisecond) // the retention asked for is over
	require.NoError(t, b.ledger.Store.Sweep(ctx).Err)
	kept := eventKinds(t, b.ledger, "team-a-1")
	require.NotContains(t, kept, "reserved")
	for _, kind := range []string{"force_released", "reset", "namespace_changed"} {
		require.Contains(t, kept, kind)
	}
}
