package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// adminService adapts ledger.Store to ledgerv1.LedgerAdminServiceServer.
type adminService struct {
	ledgerv1.UnimplementedLedgerAdminServiceServer
	store  *ledger.Store
	auth   *Auth // nil without authentication
	logger *slog.Logger
	// activity is this replica's count of each namespace's recent calls
	// (GetNamespace's NamespaceActivity); nil counts nothing.
	activity *activity
}

func page(size int32, token string) ledger.Page { return ledger.Page{Size: int(size), Token: token} }

func (s *adminService) ListEntries(ctx context.Context, req *ledgerv1.ListEntriesRequest) (*ledgerv1.ListEntriesResponse, error) {
	updatedAfter, err := optionalTime("updated_after", req.GetUpdatedAfter())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	updatedBefore, err := optionalTime("updated_before", req.GetUpdatedBefore())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	filter := ledger.EntryFilter{
		Namespace:     req.GetNamespace(),
		Owner:         req.GetOwner(),
		KeyPrefix:     req.GetKeyPrefix(),
		UpdatedAfter:  updatedAfter,
		UpdatedBefore: updatedBefore,
		Stuck:         req.GetStuck(),
	}
	for _, state := range req.GetStates() {
		filter.States = append(filter.States, states.domain(state))
	}
	entries, next, err := s.store.ListEntries(ctx, filter, page(req.GetPageSize(), req.GetPageToken()))
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	response := &ledgerv1.ListEntriesResponse{NextPageToken: next}
	for _, e := range entries {
		response.Entries = append(response.Entries, entryProto(e))
	}
	return response, nil
}

func (s *adminService) GetHistory(ctx context.Context, req *ledgerv1.GetHistoryRequest) (*ledgerv1.GetHistoryResponse, error) {
	events, next, err := s.store.GetHistory(ctx, req.GetNamespace(), req.GetKey(), page(req.GetPageSize(), req.GetPageToken()))
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.GetHistoryResponse{Events: eventsProto(events), NextPageToken: next}, nil
}

func (s *adminService) ListEvents(ctx context.Context, req *ledgerv1.ListEventsRequest) (*ledgerv1.ListEventsResponse, error) {
	start, err := optionalTime("start_time", req.GetStartTime())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	end, err := optionalTime("end_time", req.GetEndTime())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	filter := ledger.EventFilter{Namespace: req.GetNamespace(), Start: start, End: end, IncludeUnsettled: req.GetIncludeUnsettled()}
	for _, kind := range req.GetKinds() {
		filter.Kinds = append(filter.Kinds, eventKinds.domain(kind))
	}
	events, err := s.store.ListEvents(ctx, filter, page(req.GetPageSize(), req.GetPageToken()))
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.ListEventsResponse{Events: eventsProto(events.Events), NextPageToken: events.NextPageToken,
		SettledUntil: optionalTimestamp(events.SettledUntil)}, nil
}

func (s *adminService) ForceRelease(ctx context.Context, req *ledgerv1.ForceReleaseRequest) (*ledgerv1.ForceReleaseResponse, error) {
	entry, already, err := s.store.ForceRelease(ctx, ledger.ForceReleaseRequest{
		Namespace:    req.GetNamespace(),
		Key:          req.GetKey(),
		Reason:       req.GetReason(),
		FencingToken: req.GetFencingToken(),
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.ForceReleaseResponse{Entry: entryProto(entry), AlreadyReleased: already}, nil
}

func (s *adminService) ResetKey(ctx context.Context, req *ledgerv1.ResetKeyRequest) (*ledgerv1.ResetKeyResponse, error) {
	entry, err := s.store.ResetKey(ctx, ledger.ResetKeyRequest{
		Namespace:    req.GetNamespace(),
		Key:          req.GetKey(),
		Reason:       req.GetReason(),
		FencingToken: req.GetFencingToken(),
	})
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.ResetKeyResponse{Entry: entryProto(entry)}, nil
}

func (s *adminService) PurgeExpired(ctx context.Context, req *ledgerv1.PurgeExpiredRequest) (*ledgerv1.PurgeExpiredResponse, error) {
	purged, err := s.store.PurgeExpired(ctx, req.GetNamespace(), req.GetReason())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.PurgeExpiredResponse{PurgedEntries: purged}, nil
}

func (s *adminService) ListNamespaces(ctx context.Context, req *ledgerv1.ListNamespacesRequest) (*ledgerv1.ListNamespacesResponse, error) {
	namespaces, next, err := s.store.ListNamespaces(ctx, page(req.GetPageSize(), req.GetPageToken()))
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	response := &ledgerv1.ListNamespacesResponse{NextPageToken: next}
	for _, ns := range namespaces {
		response.Namespaces = append(response.Namespaces, namespaceProto(ns))
	}
	return response, nil
}

func (s *adminService) GetNamespace(ctx context.Context, req *ledgerv1.GetNamespaceRequest) (*ledgerv1.GetNamespaceResponse, error) {
	ns, err := s.store.GetNamespace(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	usage, err := s.store.NamespaceUsage(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	recent := s.activity.of(ns.Name)
	resp := &ledgerv1.GetNamespaceResponse{
		Namespace: namespaceProto(ns),
		Usage:     &ledgerv1.NamespaceUsage{HeldLeases: usage.HeldLeases, ExpiredLeases: usage.ExpiredLeases},
		Activity: &ledgerv1.NamespaceActivity{
			Window:   durationpb.New(recent.window),
			Reserves: recent.reserves,
			Replays:  recent.replays,
			Calls:    recent.calls,
			Errors:   recent.errored,
		},
	}
	if usage.StoredBytesCounted {
		resp.Usage.StoredBytes = &usage.StoredBytes
	}
	return resp, nil
}

func (s *adminService) CreateNamespace(ctx context.Context, req *ledgerv1.CreateNamespaceRequest) (*ledgerv1.CreateNamespaceResponse, error) {
	update, err := namespaceUpdate(req.GetSettings())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	if err := s.checkPlatformFields(ctx, "CreateNamespace", req.GetName(), update); err != nil {
		return nil, err
	}
	ns, err := s.store.CreateNamespace(ctx, req.GetName(), update, req.GetReason())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.CreateNamespaceResponse{Namespace: namespaceProto(ns)}, nil
}

func (s *adminService) UpdateNamespace(ctx context.Context, req *ledgerv1.UpdateNamespaceRequest) (*ledgerv1.UpdateNamespaceResponse, error) {
	update, err := namespaceUpdate(req.GetSettings())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	if err := s.checkPlatformFields(ctx, "UpdateNamespace", req.GetName(), update); err != nil {
		return nil, err
	}
	ns, err := s.store.UpdateNamespace(ctx, req.GetName(), update, req.GetReason())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &ledgerv1.UpdateNamespaceResponse{Namespace: namespaceProto(ns)}, nil
}

// checkPlatformFields refuses, with PERMISSION_DENIED naming the first
// one, a namespace change that sets a platform-owned setting (the limits
// and quotas, see ledger.NamespaceUpdate.PlatformFields) by a caller that
// is not a platform admin: a namespace's admin tunes its namespace within
// the platform's limits, and cannot widen its share of the service. A
// namespace it creates gets the server's defaults for them. Without
// authentication (development), every caller is a platform admin.
func (s *adminService) checkPlatformFields(ctx context.Context, method, namespace string, update ledger.NamespaceUpdate) error {
	fields := update.PlatformFields()
	if len(fields) == 0 || s.isPlatformAdmin(ctx) {
		return nil
	}
	principal, _ := principalFrom(ctx)
	return withDetails(codes.PermissionDenied, ReasonPermissionDenied,
		fmt.Sprintf("permission denied: %s may not set %s in %s of namespace %q: it is a platform-owned limit, which only a platform admin sets",
			principal, fields[0], method, namespace),
		map[string]string{"field": fields[0]})
}

// isPlatformAdmin reports whether the caller holds the platform-admin role;
// every caller does without authentication.
func (s *adminService) isPlatformAdmin(ctx context.Context) bool {
	if s.auth == nil {
		return true
	}
	principal, ok := principalFrom(ctx)
	if !ok {
		return false
	}
	for _, b := range s.auth.bindingsOf(principal) {
		if b.Role == ledger.RolePlatformAdmin {
			return true
		}
	}
	return false
}

// namespaceUpdate turns the set fields of the proto settings into a
// ledger.NamespaceUpdate.
func namespaceUpdate(settings *ledgerv1.NamespaceSettings) (ledger.NamespaceUpdate, error) {
	var update ledger.NamespaceUpdate
	durations := []struct {
		field string
		value *durationpb.Duration
		into  **time.Duration
	}{
		{"settings.default_lease_ttl", settings.GetDefaultLeaseTtl(), &update.DefaultLeaseTTL},
		{"settings.max_lease_ttl", settings.GetMaxLeaseTtl(), &update.MaxLeaseTTL},
		{"settings.retention", settings.GetRetention(), &update.Retention},
		{"settings.event_retention", settings.GetEventRetention(), &update.EventRetention},
	}
	for _, d := range durations {
		if d.value == nil {
			continue
		}
		value, err := duration(d.field, d.value)
		if err != nil {
			return ledger.NamespaceUpdate{}, err
		}
		*d.into = &value
	}
	if settings != nil && settings.MaxResultBytes != nil {
		value := int(settings.GetMaxResultBytes())
		update.MaxResultBytes = &value
	}
	if settings != nil && settings.MaxAttempts != nil {
		value := int(settings.GetMaxAttempts())
		update.MaxAttempts = &value
	}
	if settings != nil {
		update.MaxHeldLeases = settings.MaxHeldLeases
		update.MaxStoredBytes = settings.MaxStoredBytes
	}
	return update, nil
}

func namespaceProto(ns ledger.Namespace) *ledgerv1.Namespace {
	return &ledgerv1.Namespace{
		Name:            ns.Name,
		DefaultLeaseTtl: durationpb.New(ns.Settings.DefaultLeaseTTL),
		MaxLeaseTtl:     durationpb.New(ns.Settings.MaxLeaseTTL),
		MaxResultBytes:  int32(ns.Settings.MaxResultBytes),
		Retention:       durationpb.New(ns.Settings.Retention),
		MaxAttempts:     int32(ns.Settings.MaxAttempts),
		EventRetention:  durationpb.New(ns.Settings.EventRetention),
		MaxHeldLeases:   ns.Settings.MaxHeldLeases,
		MaxStoredBytes:  ns.Settings.MaxStoredBytes,
		CreatedAt:       timestamppb.New(ns.CreatedAt),
		UpdatedAt:       timestamppb.New(ns.UpdatedAt),
	}
}

func eventsProto(events []ledger.Event) []*ledgerv1.Event {
	out := make([]*ledgerv1.Event, 0, len(events))
	for _, e := range events {
		detail, err := structpb.NewStruct(e.Detail)
		if err != nil { // JSON from the database always converts; keep the event regardless
			detail = nil
		}
		out = append(out, &ledgerv1.Event{
			Id:           e.ID,
			Namespace:    e.Namespace,
			Key:          e.Key,
			Kind:         eventKinds.api(e.Kind),
			FencingToken: e.FencingToken,
			Owner:        e.Owner,
			Attempt:      e.Attempt,
			Caller:       e.Caller,
			At:           timestamppb.New(e.At),
			Detail:       detail,
		})
	}
	return out
}

// apiPairs pairs the domain's values of an enumeration with the API's.
type apiPairs[D ~string, A interface {
	comparable
	String() string
}] map[D]A

// api maps a domain value to the API's; the zero (UNSPECIFIED) for none.
func (p apiPairs[D, A]) api(domain D) A { return p[domain] }

// domain maps an API value to the domain's. A value the domain does not
// know maps to its name, which the store refuses or matches with nothing.
func (p apiPairs[D, A]) domain(api A) D {
	for domain, a := range p {
		if a == api {
			return domain
		}
	}
	return D(api.String())
}

// eventKinds pairs the stored kinds with the API's.
var eventKinds = apiPairs[ledger.EventKind, ledgerv1.EventKind]{
	ledger.EventReserved:           ledgerv1.EventKind_EVENT_KIND_RESERVED,
	ledger.EventTakenOver:          ledgerv1.EventKind_EVENT_KIND_TAKEN_OVER,
	ledger.EventReclaimed:          ledgerv1.EventKind_EVENT_KIND_RECLAIMED,
	ledger.EventHeartbeat:          ledgerv1.EventKind_EVENT_KIND_HEARTBEAT,
	ledger.EventCompleted:          ledgerv1.EventKind_EVENT_KIND_COMPLETED,
	ledger.EventFailed:             ledgerv1.EventKind_EVENT_KIND_FAILED,
	ledger.EventReleased:           ledgerv1.EventKind_EVENT_KIND_RELEASED,
	ledger.EventPurged:             ledgerv1.EventKind_EVENT_KIND_PURGED,
	ledger.EventRefusedStaleToken:  ledgerv1.EventKind_EVENT_KIND_REFUSED_STALE_TOKEN,
	ledger.EventRefusedFingerprint: ledgerv1.EventKind_EVENT_KIND_REFUSED_FINGERPRINT,
	ledger.EventForceReleased:      ledgerv1.EventKind_EVENT_KIND_FORCE_RELEASED,
	ledger.EventReset:              ledgerv1.EventKind_EVENT_KIND_RESET,
	ledger.EventNamespaceChanged:   ledgerv1.EventKind_EVENT_KIND_NAMESPACE_CHANGED,
	ledger.EventNamespaceCreated:   ledgerv1.EventKind_EVENT_KIND_NAMESPACE_CREATED,
	ledger.EventTokenCreated:       ledgerv1.EventKind_EVENT_KIND_TOKEN_CREATED,
	ledger.EventTokenRevoked:       ledgerv1.EventKind_EVENT_KIND_TOKEN_REVOKED,
	ledger.EventRoleGranted:        ledgerv1.EventKind_EVENT_KIND_ROLE_GRANTED,
	ledger.EventRoleRevoked:        ledgerv1.EventKind_EVENT_KIND_ROLE_REVOKED,
	ledger.EventCredentialRefused:  ledgerv1.EventKind_EVENT_KIND_CREDENTIAL_REFUSED,
	ledger.EventRestoreFenced:      ledgerv1.EventKind_EVENT_KIND_RESTORE_FENCED,
}

// states pairs the domain's states with the API's.
var states = apiPairs[ledger.State, ledgerv1.State]{
	ledger.StateLeased:    ledgerv1.State_STATE_LEASED,
	ledger.StateCompleted: ledgerv1.State_STATE_COMPLETED,
	ledger.StateFailed:    ledgerv1.State_STATE_FAILED,
	ledger.StateReleased:  ledgerv1.State_STATE_RELEASED,
	ledger.StatePurged:    ledgerv1.State_STATE_PURGED,
}

// optionalTime converts an optional proto timestamp; unset is the zero
// time.
func optionalTime(field string, t *timestamppb.Timestamp) (time.Time, error) {
	if t == nil {
		return time.Time{}, nil
	}
	if err := t.CheckValid(); err != nil {
		return time.Time{}, &ledger.ValidationError{Field: field, Reason: "must be a valid time between years 1 and 9999"}
	}
	return t.AsTime(), nil
}

func (s *adminService) WhoAmI(ctx context.Context, _ *ledgerv1.WhoAmIRequest) (*ledgerv1.WhoAmIResponse, error) {
	principal, ok := principalFrom(ctx)
	if !ok || s.auth == nil {
		return &ledgerv1.WhoAmIResponse{Principal: "anonymous"}, nil
	}
	response := &ledgerv1.WhoAmIResponse{Principal: principal}
	for _, b := range s.auth.bindingsOf(principal) {
		response.Bindings = append(response.Bindings, bindingProto(b))
	}
	return response, nil
}

func (s *adminService) CreateToken(ctx context.Context, req *ledgerv1.CreateTokenRequest) (*ledgerv1.CreateTokenResponse, error) {
	ttl, err := duration("ttl", req.GetTtl())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	token, secret, err := s.store.CreateToken(ctx, req.GetPrincipal(), req.GetDescription(), ttl, req.GetReason())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	if s.auth != nil {
		s.auth.rememberToken(token) // usable on this replica at once
	}
	return &ledgerv1.CreateTokenResponse{Token: tokenProto(token), Secret: secret}, nil
}

func (s *adminService) ListTokens(ctx context.Context, _ *ledgerv1.ListTokensRequest) (*ledgerv1.ListTokensResponse, error) {
	tokens, err := s.store.Tokens(ctx)
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	response := &ledgerv1.ListTokensResponse{}
	for _, t := range tokens {
		response.Tokens = append(response.Tokens, tokenProto(t))
	}
	return response, nil
}

func (s *adminService) RevokeToken(ctx context.Context, req *ledgerv1.RevokeTokenRequest) (*ledgerv1.RevokeTokenResponse, error) {
	token, err := s.store.RevokeToken(ctx, req.GetId(), req.GetReason())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	if s.auth != nil {
		s.auth.rememberToken(token) // refused on this replica at once
	}
	return &ledgerv1.RevokeTokenResponse{Token: tokenProto(token)}, nil
}

func (s *adminService) GrantRole(ctx context.Context, req *ledgerv1.GrantRoleRequest) (*ledgerv1.GrantRoleResponse, error) {
	binding, err := s.store.GrantRole(ctx, bindingDomain(req.GetBinding()), req.GetReason())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	s.refreshCredentials(ctx)
	return &ledgerv1.GrantRoleResponse{Binding: bindingProto(binding)}, nil
}

func (s *adminService) RevokeRole(ctx context.Context, req *ledgerv1.RevokeRoleRequest) (*ledgerv1.RevokeRoleResponse, error) {
	if err := s.store.RevokeRole(ctx, bindingDomain(req.GetBinding()), req.GetReason()); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	s.refreshCredentials(ctx)
	return &ledgerv1.RevokeRoleResponse{}, nil
}

func (s *adminService) ListRoleBindings(ctx context.Context, _ *ledgerv1.ListRoleBindingsRequest) (*ledgerv1.ListRoleBindingsResponse, error) {
	bindings, err := s.store.RoleBindings(ctx)
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	response := &ledgerv1.ListRoleBindingsResponse{}
	for _, b := range bindings {
		response.Bindings = append(response.Bindings, bindingProto(b))
	}
	return response, nil
}

// refreshCredentials applies a change of role bindings on this replica at
// once; the others apply it within their refresh interval.
func (s *adminService) refreshCredentials(ctx context.Context) {
	if s.auth == nil {
		return
	}
	if err := s.auth.Load(ctx); err != nil {
		s.logger.WarnContext(ctx, "reloading credentials after a change", "error", err)
	}
}

var roles = map[ledger.Role]ledgerv1.Role{
	ledger.RoleWorker:        ledgerv1.Role_ROLE_WORKER,
	ledger.RoleReader:        ledgerv1.Role_ROLE_READER,
	ledger.RoleAdmin:         ledgerv1.Role_ROLE_ADMIN,
	ledger.RolePlatformAdmin: ledgerv1.Role_ROLE_PLATFORM_ADMIN,
}

func bindingProto(b ledger.RoleBinding) *ledgerv1.RoleBinding {
	return &ledgerv1.RoleBinding{
		Principal:        b.Principal,
		NamespacePattern: b.NamespacePattern,
		Role:             roles[b.Role],
		CreatedAt:        optionalTimestamp(b.CreatedAt),
		CreatedBy:        b.CreatedBy,
	}
}

func bindingDomain(b *ledgerv1.RoleBinding) ledger.RoleBinding {
	binding := ledger.RoleBinding{Principal: b.GetPrincipal(), NamespacePattern: b.GetNamespacePattern(), Role: ledger.Role(b.GetRole().String())}
	for domain, api := range roles {
		if api == b.GetRole() {
			binding.Role = domain
		}
	}
	return binding
}

func tokenProto(t ledger.Token) *ledgerv1.Token {
	token := &ledgerv1.Token{
		Id:          t.ID,
		Principal:   t.Principal,
		Description: t.Description,
		CreatedAt:   optionalTimestamp(t.CreatedAt),
		CreatedBy:   t.CreatedBy,
	}
	if t.ExpiresAt != nil {
		token.ExpiresAt = timestamppb.New(*t.ExpiresAt)
	}
	if t.RevokedAt != nil {
		token.RevokedAt = timestamppb.New(*t.RevokedAt)
	}
	if t.RevokedBy != nil {
		token.RevokedBy = *t.RevokedBy
	}
	if t.LastUsedAt != nil {
		token.LastUsedAt = timestamppb.New(*t.LastUsedAt)
	}
	return token
}
