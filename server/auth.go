package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// AuthConfig configures Auth. Zero fields take their defaults.
type AuthConfig struct {
	// RefreshInterval is how often the tokens and role bindings are read
	// again from the database: a revoked token or binding stops working on
	// every replica within it (on the replica that revoked it, at once).
	// Defaults to 5s.
	RefreshInterval time.Duration
	// Logger reports refresh failures. Defaults to slog.Default().
	Logger *slog.Logger
}

// Auth authenticates callers by bearer token ("authorization: Bearer
// ldg_…") or verified client certificate (the principal "cert:<CN>", see
// TLS), and authorizes every call by the caller's role bindings in the
// namespace the request names. Credentials are checked against an
// in-memory copy of the tokens and bindings, refreshed every
// RefreshInterval, so that checking a token costs no database round trip.
//
// The health service and server reflection need no credentials.
type Auth struct {
	store  *ledger.Store
	cfg    AuthConfig
	logger *slog.Logger

	mu       sync.RWMutex
	tokens   map[string]ledger.Token         // by id
	bindings map[string][]ledger.RoleBinding // by principal
	loaded   bool

	reload chan struct{} // asks Run for an early refresh (an unknown token id)
}

// NewAuth returns an Auth over the store's credentials. Call Load (or Run)
// before serving: until the credentials are loaded, every call is
// UNAVAILABLE.
func NewAuth(store *ledger.Store, cfg AuthConfig) *Auth {
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Auth{store: store, cfg: cfg, logger: cfg.Logger, reload: make(chan struct{}, 1)}
}

// Load reads the tokens and role bindings from the database now.
func (a *Auth) Load(ctx context.Context) error {
	tokens, err := a.store.Tokens(ctx)
	if err != nil {
		return err
	}
	bindings, err := a.store.RoleBindings(ctx)
	if err != nil {
		return err
	}
	byID := make(map[string]ledger.Token, len(tokens))
	for _, t := range tokens {
		byID[t.ID] = t
	}
	byPrincipal := map[string][]ledger.RoleBinding{}
	for _, b := range bindings {
		byPrincipal[b.Principal] = append(byPrincipal[b.Principal], b)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens, a.bindings, a.loaded = byID, byPrincipal, true
	return nil
}

// minReloadGap bounds the early refreshes that unknown token ids trigger,
// so that a caller sending made-up tokens cannot load the database.
const minReloadGap = time.Second

// Run refreshes the credentials every RefreshInterval (and early, at most
// once a second, when a token id is unknown: a token just created on
// another replica) until ctx ends; it then returns nil.
func (a *Auth) Run(ctx context.Context) error {
	ticker := time.NewTicker(a.cfg.RefreshInterval)
	defer ticker.Stop()
	var last time.Time
	for {
		if err := a.Load(ctx); err != nil && ctx.Err() == nil {
			a.logger.WarnContext(ctx, "refreshing credentials; keeping the previous ones", "error", err)
		}
		last = time.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-a.reload:
			select { // at most one early refresh a second
			case <-ctx.Done():
				return nil
			case <-time.After(time.Until(last.Add(minReloadGap))):
			}
		}
	}
}

// remember adds a token or a binding made through this replica, so that it
// works here at once.
func (a *Auth) rememberToken(t ledger.Token) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokens != nil {
		a.tokens[t.ID] = t
	}
}

func (a *Auth) forget() {
	select {
	case a.reload <- struct{}{}:
	default:
	}
}

// authenticate returns the caller's principal: its bearer token's, or else
// that of its verified client certificate ("cert:<CN>", see TLS). A
// bearer token wins over a certificate, so that a proxy with a
// certificate of its own can call for the holders of tokens; a refused
// token is refused whatever the certificate.
func (a *Auth) authenticate(ctx context.Context) (string, error) {
	values := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(values) > 0 {
		return a.authenticateToken(values[0])
	}
	principal, ok, err := certificatePrincipalOf(ctx)
	switch {
	case !ok:
		return "", withDetails(codes.Unauthenticated, ReasonUnauthenticated, "credentials required: send 'authorization: Bearer <token>' or a client certificate", nil)
	case err != nil:
		return "", err
	case !a.isLoaded():
		return "", withDetails(codes.Unavailable, ReasonUnavailable, "credentials are not loaded yet; retry", nil)
	}
	return principal, nil
}

func (a *Auth) isLoaded() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.loaded
}

// authenticateToken returns the principal of the token in an
// authorization header.
func (a *Auth) authenticateToken(authorization string) (string, error) {
	bearer, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok {
		return "", withDetails(codes.Unauthenticated, ReasonUnauthenticated, "the authorization header must be 'Bearer <token>'", nil)
	}
	id, secret, err := ledger.ParseToken(strings.TrimSpace(bearer))
	if err != nil {
		return "", withDetails(codes.Unauthenticated, ReasonUnauthenticated, "invalid token", nil)
	}
	a.mu.RLock()
	token, known := a.tokens[id]
	loaded := a.loaded
	a.mu.RUnlock()
	switch {
	case !loaded:
		return "", withDetails(codes.Unavailable, ReasonUnavailable, "credentials are not loaded yet; retry", nil)
	case !known:
		a.forget() // maybe created on another replica a moment ago
		return "", withDetails(codes.Unauthenticated, ReasonUnauthenticated, "invalid token", nil)
	}
	if err := token.Verify(secret, time.Now()); err != nil {
		// "invalid token", or, to the holder of the right secret, whether
		// it expired or was revoked.
		return "", withDetails(codes.Unauthenticated, ReasonUnauthenticated, err.Error(), nil)
	}
	return token.Principal, nil
}

// bindingsOf returns a principal's role bindings.
func (a *Auth) bindingsOf(principal string) []ledger.RoleBinding {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.bindings[principal]
}

// allowed returns the principal's bindings that give it one of roles in
// namespace, none if it may not; platform admins hold every role
// everywhere (their binding alone is returned). An empty namespace
// (platform calls) is allowed to platform admins only.
func (a *Auth) allowed(principal, namespace string, roles []ledger.Role) []ledger.RoleBinding {
	var matching []ledger.RoleBinding
	for _, b := range a.bindingsOf(principal) {
		if b.Role == ledger.RolePlatformAdmin {
			return []ledger.RoleBinding{b}
		}
		if namespace == "" || !b.Matches(namespace) {
			continue
		}
		if slices.Contains(roles, b.Role) {
			matching = append(matching, b)
		}
	}
	return matching
}

// creatorPatterns returns the patterns a namespace created by a call
// authorized by bindings counts against (ledger.WithCreatorPatterns):
// none for a platform admin or a binding that names the namespace itself,
// which can create nothing else.
func creatorPatterns(bindings []ledger.RoleBinding) []string {
	var patterns []string
	for _, b := range bindings {
		if b.Role == ledger.RolePlatformAdmin || !strings.HasSuffix(b.NamespacePattern, "*") {
			return nil
		}
		patterns = append(patterns, b.NamespacePattern)
	}
	return patterns
}

// permission says who may call an RPC: the roles that allow it in the
// request's namespace. No roles: platform admins only. Any: every
// authenticated caller.
type permission struct {
	roles []ledger.Role
	any   bool
}

var (
	workers = permission{roles: []ledger.Role{ledger.RoleWorker}}
	readers = permission{roles: []ledger.Role{ledger.RoleWorker, ledger.RoleReader, ledger.RoleAdmin}}
	auditor = permission{roles: []ledger.Role{ledger.RoleReader, ledger.RoleAdmin}}
	admins  = permission{roles: []ledger.Role{ledger.RoleAdmin}}
	anyone  = permission{any: true}
)

// permissions maps every RPC to who may call it. An RPC that is not listed
// is for platform admins only, so that a new RPC is closed until it is
// given a rule.
var permissions = map[string]permission{
	ledgerv1.LedgerService_Reserve_FullMethodName:       workers,
	ledgerv1.LedgerService_Heartbeat_FullMethodName:     workers,
	ledgerv1.LedgerService_Complete_FullMethodName:      workers,
	ledgerv1.LedgerService_Fail_FullMethodName:          workers,
	ledgerv1.LedgerService_Release_FullMethodName:       workers,
	ledgerv1.LedgerService_Lookup_FullMethodName:        readers,
	ledgerv1.LedgerService_ReserveBatch_FullMethodName:  workers,
	ledgerv1.LedgerService_CompleteBatch_FullMethodName: workers,
	ledgerv1.LedgerService_LookupBatch_FullMethodName:   readers,

	ledgerv1.LedgerAdminService_ListEntries_FullMethodName:     auditor,
	ledgerv1.LedgerAdminService_GetHistory_FullMethodName:      auditor,
	ledgerv1.LedgerAdminService_ListEvents_FullMethodName:      auditor,
	ledgerv1.LedgerAdminService_GetNamespace_FullMethodName:    auditor,
	ledgerv1.LedgerAdminService_ForceRelease_FullMethodName:    admins,
	ledgerv1.LedgerAdminService_ResetKey_FullMethodName:        admins,
	ledgerv1.LedgerAdminService_PurgeExpired_FullMethodName:    admins,
	ledgerv1.LedgerAdminService_CreateNamespace_FullMethodName: admins,
	ledgerv1.LedgerAdminService_UpdateNamespace_FullMethodName: admins,
	ledgerv1.LedgerAdminService_WhoAmI_FullMethodName:          anyone,
	// ListNamespaces, the tokens and the role bindings: platform admins.
}

// namespaceOf is the namespace a request acts in: its namespace field, or
// the name of a namespace RPC. Empty for platform calls.
func namespaceOf(req any) string {
	switch r := req.(type) {
	case interface{ GetNamespace() string }:
		return r.GetNamespace()
	case interface{ GetName() string }:
		return r.GetName()
	}
	return ""
}

type principalKey struct{}

// principalFrom returns the principal the Auth interceptor authenticated.
func principalFrom(ctx context.Context) (string, bool) {
	principal, ok := ctx.Value(principalKey{}).(string)
	return principal, ok
}

// public lists the services callable without credentials.
func public(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+healthpb.Health_ServiceDesc.ServiceName+"/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// UnaryInterceptor authenticates and authorizes every unary call, and
// records the principal as the caller of the audit events it writes. A
// denied call is PERMISSION_DENIED, decided before the database is read, so
// that it says nothing about the key.
func (a *Auth) UnaryInterceptor(denied func(method string)) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if public(info.FullMethod) {
			return handler(ctx, req)
		}
		principal, err := a.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		perm := permissions[info.FullMethod]
		namespace := namespaceOf(req)
		bindings := a.allowed(principal, namespace, perm.roles)
		if !perm.any && len(bindings) == 0 {
			if denied != nil {
				denied(info.FullMethod)
			}
			return nil, withDetails(codes.PermissionDenied, ReasonPermissionDenied,
				fmt.Sprintf("permission denied: %s may not call %s in namespace %q", principal, methodName(info.FullMethod), namespace), nil)
		}
		ctx = context.WithValue(ledger.WithCaller(ctx, principal), principalKey{}, principal)
		ctx = ledger.WithCreatorPatterns(ctx, creatorPatterns(bindings)...)
		return handler(ctx, req)
	}
}

// StreamInterceptor lets the public streams through (health Watch,
// reflection) and requires credentials for any other.
func (a *Auth) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if public(info.FullMethod) {
			return handler(srv, ss)
		}
		principal, err := a.authenticate(ss.Context())
		if err != nil {
			return err
		}
		if len(a.allowed(principal, "", nil)) == 0 {
			return withDetails(codes.PermissionDenied, ReasonPermissionDenied, "permission denied", nil)
		}
		return handler(srv, ss)
	}
}
