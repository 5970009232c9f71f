package server_test

// The isolation suite: the tests named TestIsolation* encode the threat
// model of docs/security.md, a case per promise, and the weaknesses the
// tenant boundary was hardened against. `make test` runs them with the
// rest; `go test -run TestIsolation ./...` runs the suite alone.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
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
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	gatewayCtx, closeGateway := context.WithCancel(context.Background())
	handler, err := srv.HTTPHandler(gatewayCtx, server.HTTPConfig{})
	require.NoError(t, err)
	httpServer := httptest.NewServer(handler)
	t.Cleanup(func() {
		httpServer.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(t, <-served)
		closeGateway()
	})
	return twoPorts{authBundle: b, grpc: ledgertest.Dial(t, lis), http: httpServer.URL}
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
