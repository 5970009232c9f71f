package gotest_test

import (
	"context"
	"fmt"
	"net"
	"strings"
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
	"github.com/ledgerd/ledgerd/server"
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
		require.Equal(t, 11, events, "the namespace's creation by the first Reserve, and 5 reserved and 5 completed")

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

		// Retried, the reset would take until ctx ends.
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		_, err = admin.ResetKey(ctx, &ledgerv1.ResetKeyRequest{Namespace: namespace, Key: "k", Reason: "r"})
		require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
		require.NoError(t, ctx.Err(), "a reset is not retried until the context ends")
		require.Equal(t, []codes.Code{codes.Unavailable}, attempts.get())

		ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err = admin.PurgeExpired(ctx, &ledgerv1.PurgeExpiredRequest{Namespace: namespace, Reason: "r"})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
		require.Greater(t, len(attempts.get()), 2)
	})
}

// serveWithAuth serves a ledgerd with authentication on a loopback TCP port
// until t's cleanup, and returns its address and a platform admin's token.
func serveWithAuth(t *testing.T) (addr, rootToken string) {
	t.Helper()
	b := ledgertest.Store(t, testConfig)
	_, rootToken, err := b.Store.Bootstrap(t.Context(), "root")
	require.NoError(t, err)
	auth := ledgertest.RunAuth(t, b.Store)
	return ledgertest.ServeTCP(t, b.Store, server.Config{Auth: auth}), rootToken
}

// clientWithToken is a Client of the ledgerd at addr that authenticates
// with token, closed at t's cleanup.
func clientWithToken(t *testing.T, addr, token string) *ledgerclient.Client {
	t.Helper()
	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure(), ledgerclient.WithToken(token))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, client.Close()) })
	return client
}

func TestAdminClientAccess(t *testing.T) {
	noLeaks(t)

	t.Run("tokens and role bindings, from creation to revocation", func(t *testing.T) {
		t.Parallel()
		addr, rootToken := serveWithAuth(t)
		admin := clientWithToken(t, addr, rootToken).Admin()
		ctx := t.Context()

		who, err := admin.WhoAmI(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, "root", who.GetPrincipal())
		require.Len(t, who.GetBindings(), 1)
		require.Equal(t, ledgerv1.Role_ROLE_PLATFORM_ADMIN, who.GetBindings()[0].GetRole())
		require.Equal(t, "*", who.GetBindings()[0].GetNamespacePattern())

		created, err := admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{
			Principal: "svc-billing", Description: "billing workers", Ttl: durationpb.New(time.Hour), Reason: "new pipeline",
		})
		require.NoError(t, err)
		token := created.GetToken()
		require.True(t, strings.HasPrefix(created.GetSecret(), "ldg_"+token.GetId()+"_"), "the secret is the whole bearer token")
		require.Equal(t, "svc-billing", token.GetPrincipal())
		require.Equal(t, "billing workers", token.GetDescription())
		require.Equal(t, "root", token.GetCreatedBy())
		require.WithinDuration(t, time.Now().Add(time.Hour), token.GetExpiresAt().AsTime(), time.Minute)
		require.Nil(t, token.GetRevokedAt())

		// The new token authenticates at once, but its principal has no role yet.
		worker := clientWithToken(t, addr, created.GetSecret())
		who, err = worker.Admin().WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
		require.NoError(t, err)
		require.Equal(t, "svc-billing", who.GetPrincipal())
		require.Empty(t, who.GetBindings())
		_, err = worker.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "k", Owner: "w1"})
		require.ErrorIs(t, err, ledgerclient.ErrPermissionDenied)

		binding := &ledgerv1.RoleBinding{Principal: "svc-billing", NamespacePattern: "billing", Role: ledgerv1.Role_ROLE_WORKER}
		granted, err := admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Binding: binding, Reason: "new pipeline"})
		require.NoError(t, err)
		require.Equal(t, "root", granted.GetBinding().GetCreatedBy())
		_, err = admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Binding: binding, Reason: "again"})
		require.NoError(t, err, "granting again changes nothing")
		acquire(t, worker, "k", "w1") // works at once on the replica that granted it

		bindings, err := admin.ListRoleBindings(ctx, nil)
		require.NoError(t, err)
		var listed []string
		for _, b := range bindings.GetBindings() {
			listed = append(listed, fmt.Sprintf("%s %s %s", b.GetPrincipal(), b.GetRole(), b.GetNamespacePattern()))
		}
		require.Equal(t, []string{"root ROLE_PLATFORM_ADMIN *", "svc-billing ROLE_WORKER billing"}, listed)

		tokens, err := admin.ListTokens(ctx, nil)
		require.NoError(t, err)
		require.Len(t, tokens.GetTokens(), 2, "the bootstrap token and the new one")
		require.Equal(t, token.GetId(), tokens.GetTokens()[1].GetId())

		// Access management is for platform admins only.
		_, err = worker.Admin().ListTokens(ctx, nil)
		require.ErrorIs(t, err, ledgerclient.ErrPermissionDenied)
		_, err = worker.Admin().CreateToken(ctx, &ledgerv1.CreateTokenRequest{Principal: "me", Reason: "escalate"})
		require.ErrorIs(t, err, ledgerclient.ErrPermissionDenied)
		_, err = worker.Admin().GrantRole(ctx, &ledgerv1.GrantRoleRequest{Reason: "escalate",
			Binding: &ledgerv1.RoleBinding{Principal: "svc-billing", NamespacePattern: "*", Role: ledgerv1.Role_ROLE_PLATFORM_ADMIN}})
		require.ErrorIs(t, err, ledgerclient.ErrPermissionDenied)

		_, err = admin.RevokeRole(ctx, &ledgerv1.RevokeRoleRequest{Binding: binding, Reason: "pipeline retired"})
		require.NoError(t, err)
		_, err = admin.RevokeRole(ctx, &ledgerv1.RevokeRoleRequest{Binding: binding, Reason: "again"})
		require.ErrorIs(t, err, ledgerclient.ErrNotFound)
		_, err = worker.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "k2", Owner: "w1"})
		require.ErrorIs(t, err, ledgerclient.ErrPermissionDenied)

		revoked, err := admin.RevokeToken(ctx, &ledgerv1.RevokeTokenRequest{Id: token.GetId(), Reason: "leaked"})
		require.NoError(t, err)
		require.NotNil(t, revoked.GetToken().GetRevokedAt())
		require.Equal(t, "root", revoked.GetToken().GetRevokedBy())
		again, err := admin.RevokeToken(ctx, &ledgerv1.RevokeTokenRequest{Id: token.GetId(), Reason: "again"})
		require.NoError(t, err, "revoking again changes nothing")
		require.True(t, again.GetToken().GetRevokedAt().AsTime().Equal(revoked.GetToken().GetRevokedAt().AsTime()))
		_, err = worker.Admin().WhoAmI(ctx, nil)
		require.ErrorIs(t, err, ledgerclient.ErrUnauthenticated)
		require.Equal(t, codes.Unauthenticated, status.Code(err))
	})

	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		addr, rootToken := serveWithAuth(t)
		admin := clientWithToken(t, addr, rootToken).Admin()
		ctx := t.Context()

		_, err := admin.RevokeToken(ctx, &ledgerv1.RevokeTokenRequest{Id: "0123456789abcdef", Reason: "r"})
		require.ErrorIs(t, err, ledgerclient.ErrNotFound)
		_, err = admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{Principal: "p"})
		require.ErrorIs(t, err, ledgerclient.ErrInvalidArgument, "a reason is required")
		_, err = admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Reason: "r",
			Binding: &ledgerv1.RoleBinding{Principal: "p", NamespacePattern: "ns"}})
		require.ErrorIs(t, err, ledgerclient.ErrInvalidArgument)
		var e *ledgerclient.Error
		require.ErrorAs(t, err, &e)
		require.Equal(t, "role", e.Field)
		_, err = admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Reason: "r",
			Binding: &ledgerv1.RoleBinding{Principal: "p", NamespacePattern: "ns", Role: ledgerv1.Role_ROLE_PLATFORM_ADMIN}})
		require.ErrorIs(t, err, ledgerclient.ErrInvalidArgument, "platform admins are bound to *")

		anonymous, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
		require.NoError(t, err)
		defer func() { require.NoError(t, anonymous.Close()) }()
		_, err = anonymous.Admin().WhoAmI(ctx, nil)
		require.ErrorIs(t, err, ledgerclient.ErrUnauthenticated)
	})

	t.Run("without authentication, WhoAmI answers anonymous", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		who, err := b.client.Admin().WhoAmI(t.Context(), nil)
		require.NoError(t, err)
		require.Equal(t, "anonymous", who.GetPrincipal())
	})

	t.Run("token creation and role revocation are made once; the other access calls are retried", func(t *testing.T) {
		t.Parallel()
		// unreachable returns an AdminClient of a closed port, and the codes
		// of its attempts.
		unreachable := func(t *testing.T) (*ledgerclient.AdminClient, *callCodes) {
			t.Helper()
			attempts := &callCodes{}
			conn, err := grpc.NewClient(closedAddr(t), grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithUnaryInterceptor(attempts.interceptor))
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, conn.Close()) })
			return ledgerclient.NewAdminFromConn(conn), attempts
		}
		binding := &ledgerv1.RoleBinding{Principal: "p", NamespacePattern: "ns", Role: ledgerv1.Role_ROLE_READER}

		once := map[string]func(ctx context.Context, admin *ledgerclient.AdminClient) error{
			"CreateToken": func(ctx context.Context, admin *ledgerclient.AdminClient) error {
				_, err := admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{Principal: "p", Reason: "r"})
				return err
			},
			"RevokeRole": func(ctx context.Context, admin *ledgerclient.AdminClient) error {
				_, err := admin.RevokeRole(ctx, &ledgerv1.RevokeRoleRequest{Binding: binding, Reason: "r"})
				return err
			},
		}
		retried := map[string]func(ctx context.Context, admin *ledgerclient.AdminClient) error{
			"WhoAmI": func(ctx context.Context, admin *ledgerclient.AdminClient) error {
				_, err := admin.WhoAmI(ctx, nil)
				return err
			},
			"ListTokens": func(ctx context.Context, admin *ledgerclient.AdminClient) error {
				_, err := admin.ListTokens(ctx, nil)
				return err
			},
			"RevokeToken": func(ctx context.Context, admin *ledgerclient.AdminClient) error {
				_, err := admin.RevokeToken(ctx, &ledgerv1.RevokeTokenRequest{Id: "0123456789abcdef", Reason: "r"})
				return err
			},
			"GrantRole": func(ctx context.Context, admin *ledgerclient.AdminClient) error {
				_, err := admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Binding: binding, Reason: "r"})
				return err
			},
			"ListRoleBindings": func(ctx context.Context, admin *ledgerclient.AdminClient) error {
				_, err := admin.ListRoleBindings(ctx, nil)
				return err
			},
		}
		for name, rpc := range once {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				admin, attempts := unreachable(t)
				// Retried, the call would take until ctx ends.
				ctx, cancel := context.WithTimeout(t.Context(), patience)
				defer cancel()
				err := rpc(ctx, admin)
				require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
				require.NoError(t, ctx.Err(), "not retried until the context ends")
				require.Equal(t, []codes.Code{codes.Unavailable}, attempts.get())
			})
		}
		for name, rpc := range retried {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				admin, attempts := unreachable(t)
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer cancel()
				err := rpc(ctx, admin)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.ErrorIs(t, err, ledgerclient.ErrUnavailable)
				require.Greater(t, len(attempts.get()), 2)
			})
		}
	})
}
