package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

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
	// Logger reports refresh failures, and every refused authentication at
	// WARN. Defaults to slog.Default().
	Logger *slog.Logger
	// Metrics counts refused authentications by reason
	// (ledgerd_auth_failures_total). Defaults to nil: not counted.
	Metrics *Metrics
	// FailedAuthLimit bounds the failed authentications of each source
	// address (its host): a token bucket that each failure takes from. A
	// source whose bucket is empty is refused with RESOURCE_EXHAUSTED
	// (RATE_LIMITED, with a RetryInfo) before its credentials are checked,
	// whatever they are, until the bucket refills. Calls that authenticate
	// take nothing. Defaults to DefaultFailedAuthLimit (50 failures, then 5
	// a second); a negative PerSecond turns the limit off.
	FailedAuthLimit Rate
	// MaxFailedAuthSources bounds the sources whose failures are counted:
	// beyond it, the one that failed least recently is forgotten. Defaults
	// to DefaultMaxFailedAuthSources (10,000).
	MaxFailedAuthSources int
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

	// loading serializes Load and rememberToken, so that the credentials
	// installed last are always the newest: a refresh that read the tables
	// before a token or binding was changed through this replica cannot
	// install its older copy after the change (which would make a new token
	// unknown, or a revoked one valid, until the next refresh).
	loading sync.Mutex

	mu       sync.RWMutex
	tokens   map[string]ledger.Token         // by id
	bindings map[string][]ledger.RoleBinding // by principal
	loaded   bool
	// warnedPatterns are the legacy prefix patterns already logged (see
	// ledger.LegacyPattern), so that each is logged once, not at every
	// refresh.
	warnedPatterns map[ledger.RoleBinding]bool

	reload   chan struct{} // asks Run for an early refresh (an unknown token id)
	failures *failureLimiter
	uses     tokenUses
	audit    *refusalAudit
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
	if cfg.FailedAuthLimit == (Rate{}) {
		cfg.FailedAuthLimit = DefaultFailedAuthLimit
	}
	if cfg.MaxFailedAuthSources <= 0 {
		cfg.MaxFailedAuthSources = DefaultMaxFailedAuthSources
	}
	return &Auth{
		store: store, cfg: cfg, logger: cfg.Logger, reload: make(chan struct{}, 1),
		warnedPatterns: map[ledger.RoleBinding]bool{},
		failures:       newFailureLimiter(cfg.FailedAuthLimit, cfg.MaxFailedAuthSources),
		audit:          newRefusalAudit(),
	}
}

// Load reads the tokens and role bindings from the database now.
func (a *Auth) Load(ctx context.Context) error {
	a.loading.Lock()
	defer a.loading.Unlock()
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
	for _, b := range bindings {
		key := ledger.RoleBinding{Principal: b.Principal, NamespacePattern: b.NamespacePattern, Role: b.Role}
		if ledger.LegacyPattern(b.NamespacePattern) && !a.warnedPatterns[key] {
			a.warnedPatterns[key] = true
			a.logger.WarnContext(ctx, "a role binding's prefix pattern does not end in a separator, so it also covers namespaces that merely begin alike: grant one that does (e.g. 'team-a-*' for 'team-a*') and revoke this one",
				"principal", b.Principal, "role", string(b.Role), "namespace_pattern", b.NamespacePattern)
		}
	}
	return nil
}

// minReloadGap bounds the early refreshes that unknown token ids trigger,
// so that a caller sending made-up tokens cannot load the database.
const minReloadGap = time.Second

// Run refreshes the credentials every RefreshInterval (and early, at most
// once a second, when a token id is unknown: a token just created on
// another replica) until ctx ends; it then returns nil. Before each
// refresh, it writes when tokens were last used (one statement), and it
// writes the audit events of revoked and expired tokens presented to this
// replica as they come; both are written a last time when ctx ends.
func (a *Auth) Run(ctx context.Context) error {
	ticker := time.NewTicker(a.cfg.RefreshInterval)
	defer ticker.Stop()
	refusalsWritten := make(chan struct{})
	go func() {
		defer close(refusalsWritten)
		a.writeRefusals(ctx)
	}()
	defer func() {
		final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		a.flushUses(final)
		<-refusalsWritten
	}()
	var last time.Time
	for {
		a.flushUses(ctx)
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

// rememberToken installs a token created or revoked through this replica,
// so that it works, or stops working, here at once. It waits for a refresh
// under way: that one may have read the tables before the change.
func (a *Auth) rememberToken(t ledger.Token) {
	a.loading.Lock()
	defer a.loading.Unlock()
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
// token is refused whatever the certificate. It works from the call's
// context alone (metadata and peer), whichever port the call came in on.
//
// A source address that failed too often is refused first, before its
// credentials are read (see AuthConfig.FailedAuthLimit). Every refusal is
// counted, logged at WARN with its reason, and taken from its source's
// bucket (see refused); the principal and credential id are left for the
// request log, and a token's use is remembered for its last_used_at.
func (a *Auth) authenticate(ctx context.Context) (string, error) {
	now := time.Now()
	var at attempt
	if a.failures.active() { // the source is read only while some source failed
		at.source = callSource(ctx)
	}
	if ok, retryAfter, first := a.failures.admit(at.source, now); !ok {
		at.refusal = refusalRateLimited
		a.refused(ctx, at, now, first)
		noteIdentity(ctx, at)
		return "", withDetails(codes.ResourceExhausted, ReasonRateLimited,
			fmt.Sprintf("too many failed authentications from this address; retry after %s", retryAfter.Round(time.Millisecond)), nil,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
	}
	err := a.check(ctx, &at, now)
	noteIdentity(ctx, at)
	if at.refusal != "" {
		if at.source == "" {
			at.source = callSource(ctx)
		}
		a.refused(ctx, at, now, false)
	}
	if err != nil {
		return "", err
	}
	return at.principal, nil
}

// check reads the call's credentials into at: its principal and credential
// id if they hold, the refusal reason if not.
func (a *Auth) check(ctx context.Context, at *attempt, now time.Time) error {
	values := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(values) > 0 {
		return a.checkToken(values[0], at, now)
	}
	principal, ok, err := certificatePrincipalOf(ctx)
	at.credential = certificateCredentialOf(ctx)
	switch {
	case !ok:
		at.refusal = refusalMissing
		return withDetails(codes.Unauthenticated, ReasonUnauthenticated, "credentials required: send 'authorization: Bearer <token>' or a client certificate", nil)
	case err != nil:
		at.refusal = refusalCertificateName
		return err
	case !a.isLoaded():
		return withDetails(codes.Unavailable, ReasonUnavailable, "credentials are not loaded yet; retry", nil)
	}
	at.principal = principal
	return nil
}

func (a *Auth) isLoaded() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.loaded
}

// bearerToken returns the token of an authorization header: "Bearer
// <token>", the scheme in any case (RFC 6750).
func bearerToken(authorization string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// tokenIDLength is the length of the ids CreateToken makes (8 random bytes
// in hex); a longer or shorter id is malformed, so that a made-up one,
// whatever its size, never reaches the logs.
const tokenIDLength = 16

// checkToken reads the token of an authorization header into at. An
// unknown id and a wrong secret are both "invalid token" to the caller;
// only the holder of the right secret learns that it expired or was
// revoked.
func (a *Auth) checkToken(authorization string, at *attempt, now time.Time) error {
	bearer, ok := bearerToken(authorization)
	if !ok {
		at.refusal = refusalMalformed
		return withDetails(codes.Unauthenticated, ReasonUnauthenticated, "the authorization header must be 'Bearer <token>'", nil)
	}
	id, secret, err := ledger.ParseToken(bearer)
	if err != nil || len(id) != tokenIDLength {
		at.refusal = refusalMalformed
		return withDetails(codes.Unauthenticated, ReasonUnauthenticated, "invalid token", nil)
	}
	at.credential = tokenCredential(id)
	a.mu.RLock()
	token, known := a.tokens[id]
	loaded := a.loaded
	a.mu.RUnlock()
	switch {
	case !loaded:
		return withDetails(codes.Unavailable, ReasonUnavailable, "credentials are not loaded yet; retry", nil)
	case !known:
		a.forget() // maybe created on another replica a moment ago
		at.refusal = refusalUnknownToken
		return withDetails(codes.Unauthenticated, ReasonUnauthenticated, "invalid token", nil)
	}
	if err := token.Verify(secret, now); err != nil {
		switch {
		case errors.Is(err, ledger.ErrTokenRevoked):
			at.refusal, at.principal = refusalRevoked, token.Principal
		case errors.Is(err, ledger.ErrTokenExpired):
			at.refusal, at.principal = refusalExpired, token.Principal
		default:
			at.refusal = refusalWrongSecret // not its principal: the caller may not be its holder
		}
		// "invalid token", or, to the holder of the right secret, whether
		// it expired or was revoked.
		return withDetails(codes.Unauthenticated, ReasonUnauthenticated, err.Error(), nil)
	}
	at.principal = token.Principal
	a.uses.used(id, now)
	return nil
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
