package ledgerclient

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// The errors that only LedgerAdminService returns. Like the others, an *Error
// from an admin call matches the sentinel of its reason with errors.Is.
var (
	// ErrNotLeased means ForceRelease found the key not leased (reason
	// NOT_LEASED): it is completed, failed or already released.
	ErrNotLeased = errors.New("ledgerd: not leased")

	// ErrAlreadyExists means CreateNamespace named a namespace that exists
	// (reason ALREADY_EXISTS).
	ErrAlreadyExists = errors.New("ledgerd: already exists")
)

// AdminClient talks to ledgerd's LedgerAdminService: listings of entries and
// audit events, admin actions on keys, and namespace settings. It is for
// operators and auditors (ledgerctl uses it); pipelines use Client. Its
// methods are typed wrappers over the generated client that return *Error
// values like Client's. Get one from Client.Admin or NewAdminFromConn; it is
// safe for concurrent use.
//
// It also manages access, for platform admins: API tokens (CreateToken,
// ListTokens, RevokeToken) and role bindings (GrantRole, RevokeRole,
// ListRoleBindings); WhoAmI tells any caller who it is.
//
// The methods whose RPC is idempotent (every one but ResetKey,
// CreateNamespace, CreateToken, RevokeRole, and ForceRelease without a
// fencing token) retry while the server is unavailable, until ctx ends, like
// Client's. The others are made once: retrying a reset after a lost response
// could reset the key again after a worker had acquired it, and a retried
// CreateToken could issue a second token whose secret nobody sees.
type AdminClient struct {
	admin  ledgerv1.LedgerAdminServiceClient
	policy *callPolicy // the Client's (from Client.Admin), or nil
}

// NewAdminFromConn returns an AdminClient that makes its calls over conn, a
// connection the caller made and owns. It has no circuit breaker and no
// retry budget: its idempotent calls retry until ctx ends.
func NewAdminFromConn(conn grpc.ClientConnInterface) *AdminClient {
	return &AdminClient{admin: ledgerv1.NewLedgerAdminServiceClient(conn)}
}

// Admin returns an AdminClient over the Client's connection (closing a
// Client made by New closes it too). Its calls go through the Client's
// circuit breaker and retry budget, and count in its Stats.
func (c *Client) Admin() *AdminClient {
	a := NewAdminFromConn(c.cc)
	a.policy = c.policy
	return a
}

// ListEntries returns one page of a namespace's entries, in key order,
// filtered as req says. Entries pages through all of them. It fails with
// ErrInvalidArgument.
func (a *AdminClient) ListEntries(ctx context.Context, req *ledgerv1.ListEntriesRequest) (*ledgerv1.ListEntriesResponse, error) {
	response, err := call(ctx, a.policy, "list entries", a.admin.ListEntries, req)
	return response, prefixed(err)
}

// GetHistory returns one page of a key's audit events, oldest first (an
// empty page for a key without events). History pages through all of them.
// It fails with ErrInvalidArgument.
func (a *AdminClient) GetHistory(ctx context.Context, req *ledgerv1.GetHistoryRequest) (*ledgerv1.GetHistoryResponse, error) {
	response, err := call(ctx, a.policy, "get history", a.admin.GetHistory, req)
	return response, prefixed(err)
}

// ListEvents returns one page of a namespace's audit events in a time range,
// oldest first. Events pages through all of them. It fails with
// ErrInvalidArgument.
func (a *AdminClient) ListEvents(ctx context.Context, req *ledgerv1.ListEventsRequest) (*ledgerv1.ListEventsResponse, error) {
	response, err := call(ctx, a.policy, "list events", a.admin.ListEvents, req)
	return response, prefixed(err)
}

// ForceRelease ends the current lease of a key, whoever holds it. With
// req.FencingToken set it releases only that grant, fails with ErrLeaseLost
// if another is current, and is retried like the idempotent calls; without
// it, it is made once (a retry could end the lease of the worker that took
// the key over in between). It fails with ErrInvalidArgument, ErrNotFound,
// ErrNotLeased or ErrLeaseLost.
func (a *AdminClient) ForceRelease(ctx context.Context, req *ledgerv1.ForceReleaseRequest) (*ledgerv1.ForceReleaseResponse, error) {
	if req.GetFencingToken() == 0 {
		response, err := callOnce(ctx, "force release", a.admin.ForceRelease, req)
		return response, prefixed(err)
	}
	response, err := call(ctx, a.policy, "force release", a.admin.ForceRelease, req)
	return response, prefixed(err)
}

// ResetKey forgets a key's result or failure (or ends its lease) so that its
// work runs again. It is made once, never retried: see AdminClient. It fails
// with ErrInvalidArgument or ErrNotFound.
func (a *AdminClient) ResetKey(ctx context.Context, req *ledgerv1.ResetKeyRequest) (*ledgerv1.ResetKeyResponse, error) {
	response, err := callOnce(ctx, "reset key", a.admin.ResetKey, req)
	return response, prefixed(err)
}

// PurgeExpired removes a namespace's completed and failed entries whose
// retention has elapsed. It fails with ErrInvalidArgument.
func (a *AdminClient) PurgeExpired(ctx context.Context, req *ledgerv1.PurgeExpiredRequest) (*ledgerv1.PurgeExpiredResponse, error) {
	response, err := call(ctx, a.policy, "purge expired", a.admin.PurgeExpired, req)
	return response, prefixed(err)
}

// ListNamespaces returns one page of the namespaces, by name. Namespaces
// pages through all of them. It fails with ErrInvalidArgument.
func (a *AdminClient) ListNamespaces(ctx context.Context, req *ledgerv1.ListNamespacesRequest) (*ledgerv1.ListNamespacesResponse, error) {
	response, err := call(ctx, a.policy, "list namespaces", a.admin.ListNamespaces, req)
	return response, prefixed(err)
}

// GetNamespace returns one namespace's settings. It fails with
// ErrInvalidArgument or ErrNotFound.
func (a *AdminClient) GetNamespace(ctx context.Context, req *ledgerv1.GetNamespaceRequest) (*ledgerv1.GetNamespaceResponse, error) {
	response, err := call(ctx, a.policy, "get namespace", a.admin.GetNamespace, req)
	return response, prefixed(err)
}

// CreateNamespace creates a namespace; unset settings take the server's
// defaults. It is made once, never retried (a retry after a lost response
// would fail with ErrAlreadyExists). It fails with ErrInvalidArgument or
// ErrAlreadyExists.
func (a *AdminClient) CreateNamespace(ctx context.Context, req *ledgerv1.CreateNamespaceRequest) (*ledgerv1.CreateNamespaceResponse, error) {
	response, err := callOnce(ctx, "create namespace", a.admin.CreateNamespace, req)
	return response, prefixed(err)
}

// UpdateNamespace changes the settings set in req and keeps the others. It
// fails with ErrInvalidArgument or ErrNotFound.
func (a *AdminClient) UpdateNamespace(ctx context.Context, req *ledgerv1.UpdateNamespaceRequest) (*ledgerv1.UpdateNamespaceResponse, error) {
	response, err := call(ctx, a.policy, "update namespace", a.admin.UpdateNamespace, req)
	return response, prefixed(err)
}

// WhoAmI tells who ledgerd authenticated the caller as, and the caller's
// role bindings. Any authenticated caller may ask; a ledgerd without
// authentication answers "anonymous". It fails with ErrUnauthenticated.
func (a *AdminClient) WhoAmI(ctx context.Context, req *ledgerv1.WhoAmIRequest) (*ledgerv1.WhoAmIResponse, error) {
	if req == nil {
		req = &ledgerv1.WhoAmIRequest{}
	}
	response, err := call(ctx, a.policy, "who am i", a.admin.WhoAmI, req)
	return response, prefixed(err)
}

// CreateToken issues an API token for req.Principal. The response's Secret
// is the whole bearer token ("ldg_<id>_<secret>", for WithToken): it is in
// this response only, ledgerd keeps a hash. It is made once, never retried:
// a retry after a lost response would issue a second token (list the tokens
// and revoke the one nobody holds). Platform admins only. It fails with
// ErrInvalidArgument or ErrPermissionDenied.
func (a *AdminClient) CreateToken(ctx context.Context, req *ledgerv1.CreateTokenRequest) (*ledgerv1.CreateTokenResponse, error) {
	response, err := callOnce(ctx, "create token", a.admin.CreateToken, req)
	return response, prefixed(err)
}

// ListTokens returns every API token, revoked and expired ones included,
// oldest first, without their secrets. Platform admins only. It fails with
// ErrPermissionDenied.
func (a *AdminClient) ListTokens(ctx context.Context, req *ledgerv1.ListTokensRequest) (*ledgerv1.ListTokensResponse, error) {
	if req == nil {
		req = &ledgerv1.ListTokensRequest{}
	}
	response, err := call(ctx, a.policy, "list tokens", a.admin.ListTokens, req)
	return response, prefixed(err)
}

// RevokeToken revokes an API token by its id; revoking it again changes
// nothing, so it is retried. Every ledgerd replica refuses the token within
// its credential refresh interval. Platform admins only. It fails with
// ErrInvalidArgument, ErrNotFound or ErrPermissionDenied.
func (a *AdminClient) RevokeToken(ctx context.Context, req *ledgerv1.RevokeTokenRequest) (*ledgerv1.RevokeTokenResponse, error) {
	response, err := call(ctx, a.policy, "revoke token", a.admin.RevokeToken, req)
	return response, prefixed(err)
}

// GrantRole binds a role to a principal in the namespaces a pattern matches;
// granting it again changes nothing, so it is retried. Platform admins only.
// It fails with ErrInvalidArgument or ErrPermissionDenied.
func (a *AdminClient) GrantRole(ctx context.Context, req *ledgerv1.GrantRoleRequest) (*ledgerv1.GrantRoleResponse, error) {
	response, err := call(ctx, a.policy, "grant role", a.admin.GrantRole, req)
	return response, prefixed(err)
}

// RevokeRole removes a role binding. It is made once, never retried: a retry
// after a lost response would fail with ErrNotFound although the binding was
// removed. Platform admins only. It fails with ErrInvalidArgument,
// ErrNotFound (no such binding) or ErrPermissionDenied.
func (a *AdminClient) RevokeRole(ctx context.Context, req *ledgerv1.RevokeRoleRequest) (*ledgerv1.RevokeRoleResponse, error) {
	response, err := callOnce(ctx, "revoke role", a.admin.RevokeRole, req)
	return response, prefixed(err)
}

// ListRoleBindings returns every role binding, by principal. Platform admins
// only. It fails with ErrPermissionDenied.
func (a *AdminClient) ListRoleBindings(ctx context.Context, req *ledgerv1.ListRoleBindingsRequest) (*ledgerv1.ListRoleBindingsResponse, error) {
	if req == nil {
		req = &ledgerv1.ListRoleBindingsRequest{}
	}
	response, err := call(ctx, a.policy, "list role bindings", a.admin.ListRoleBindings, req)
	return response, prefixed(err)
}

// Entries pages through the entries that req selects, in key order, from
// req's page token (usually empty: the first page). req is not changed. The
// sequence stops after the first error, which it yields with a nil entry.
func (a *AdminClient) Entries(ctx context.Context, req *ledgerv1.ListEntriesRequest) iter.Seq2[*ledgerv1.Entry, error] {
	return pages(ctx, req, a.ListEntries,
		func(r *ledgerv1.ListEntriesRequest, token string) { r.PageToken = token },
		(*ledgerv1.ListEntriesResponse).GetEntries)
}

// History pages through a key's audit events, oldest first. req is not
// changed; errors end the sequence as with Entries.
func (a *AdminClient) History(ctx context.Context, req *ledgerv1.GetHistoryRequest) iter.Seq2[*ledgerv1.Event, error] {
	return pages(ctx, req, a.GetHistory,
		func(r *ledgerv1.GetHistoryRequest, token string) { r.PageToken = token },
		(*ledgerv1.GetHistoryResponse).GetEvents)
}

// Events pages through the audit events that req selects, oldest first. req
// is not changed; errors end the sequence as with Entries.
func (a *AdminClient) Events(ctx context.Context, req *ledgerv1.ListEventsRequest) iter.Seq2[*ledgerv1.Event, error] {
	return pages(ctx, req, a.ListEvents,
		func(r *ledgerv1.ListEventsRequest, token string) { r.PageToken = token },
		(*ledgerv1.ListEventsResponse).GetEvents)
}

// Namespaces pages through the namespaces, by name. req may be nil; it is
// not changed. Errors end the sequence as with Entries.
func (a *AdminClient) Namespaces(ctx context.Context, req *ledgerv1.ListNamespacesRequest) iter.Seq2[*ledgerv1.Namespace, error] {
	if req == nil {
		req = &ledgerv1.ListNamespacesRequest{}
	}
	return pages(ctx, req, a.ListNamespaces,
		func(r *ledgerv1.ListNamespacesRequest, token string) { r.PageToken = token },
		(*ledgerv1.ListNamespacesResponse).GetNamespaces)
}

// pageResponse is a listing response: it says where the next page starts.
type pageResponse interface {
	GetNextPageToken() string
}

// pages yields the items of every page of a listing, calling list with a
// copy of req whose page token setToken moves along.
func pages[Req proto.Message, Resp pageResponse, Item any](
	ctx context.Context,
	req Req,
	list func(context.Context, Req) (Resp, error),
	setToken func(Req, string),
	items func(Resp) []Item,
) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		page := proto.Clone(req).(Req)
		var previous string
		for {
			response, err := list(ctx, page)
			if err != nil {
				var zero Item
				yield(zero, err)
				return
			}
			for _, item := range items(response) {
				if !yield(item, nil) {
					return
				}
			}
			next := response.GetNextPageToken()
			if next == "" {
				return
			}
			if next == previous {
				// A server that hands the same token back would loop forever.
				var zero Item
				yield(zero, fmt.Errorf("ledgerclient: the server returned page token %q twice", next))
				return
			}
			setToken(page, next)
			previous = next
		}
	}
}

// callOnce makes one RPC without retries (for calls that are not idempotent)
// and names the operation in its error, which is an *Error for a gRPC
// status.
func callOnce[Req, Resp any](ctx context.Context, op string, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	response, err := rpc(ctx, req)
	if err != nil {
		return response, fmt.Errorf("%s: %w", op, toError(err))
	}
	return response, nil
}
