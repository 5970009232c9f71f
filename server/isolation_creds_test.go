package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// credsBundle is a ledgerd with authentication as cmd/ledgerd runs it: gRPC
// on a loopback port, the HTTP port's gateway calling it in-process, the
// request log as JSON, metrics, and a platform admin "root".
type credsBundle struct {
	ledger   ledgertest.Bundle
	auth     *server.Auth
	grpcAddr string
	httpURL  string
	metrics  *server.Metrics
	log      *ledgertest.LogBuffer
	root     string // the bootstrap token
}

func serveCreds(t *testing.T, cfg ledger.Config, authCfg server.AuthConfig) credsBundle {
	t.Helper()
	b := ledgertest.Store(t, cfg)
	_, root, err := b.Store.Bootstrap(t.Context(), "root")
	require.NoError(t, err)
	log := &ledgertest.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(log, nil))
	metrics := server.NewMetrics(b.Store, server.MetricsConfig{Logger: logger})
	authCfg.Logger, authCfg.Metrics = logger, metrics
	if authCfg.RefreshInterval == 0 {
		authCfg.RefreshInterval = 100 * time.Millisecond
	}
	auth := server.NewAuth(b.Store, authCfg)
	require.NoError(t, auth.Load(t.Context()))
	runCtx, stopAuth := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- auth.Run(runCtx) }()
	t.Cleanup(func() { stopAuth(); require.NoError(t, <-ran) })

	srv, err := server.New(b.Store, server.Config{Logger: logger, Metrics: metrics, Auth: auth})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := serveBothPorts(t, srv, lis, server.HTTPConfig{Metrics: metrics, Logger: logger})
	return credsBundle{ledger: b, auth: auth, grpcAddr: lis.Addr().String(), httpURL: url, metrics: metrics, log: log, root: root}
}

// dialFrom connects to the gRPC port from a loopback address of its own
// (127.0.0.1, 127.0.0.2...), so that calls come from distinct sources.
func (b credsBundle) dialFrom(t *testing.T, localIP string) *grpc.ClientConn {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	conn, err := grpc.NewClient("passthrough:///"+b.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// createToken issues a token through the API, as root.
func (b credsBundle) createToken(t *testing.T, conn *grpc.ClientConn, principal string, ttl time.Duration) *ledgerv1.CreateTokenResponse {
	t.Helper()
	request := &ledgerv1.CreateTokenRequest{Principal: principal, Reason: "test"}
	if ttl > 0 {
		request.Ttl = durationpb.New(ttl)
	}
	created, err := ledgerv1.NewLedgerAdminServiceClient(conn).CreateToken(as(t.Context(), b.root), request)
	require.NoError(t, err)
	return created
}

// lines returns the log lines whose message is msg, decoded.
func (b credsBundle) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var found []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.log.String()), "\n") {
		var entry map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &entry), line)
		if entry["msg"] == msg {
			found = append(found, entry)
		}
	}
	return found
}

// authFailures is ledgerd_auth_failures_total{reason}.
func (b credsBundle) authFailures(t *testing.T, reason string) float64 {
	t.Helper()
	families, err := b.metrics.Registry().Gather()
	require.NoError(t, err)
	for _, family := range families {
		if family.GetName() != "ledgerd_auth_failures_total" {
			continue
		}
		for _, m := range family.GetMetric() {
			for _, label := range m.GetLabel() {
				if label.GetName() == "reason" && label.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no ledgerd_auth_failures_total{reason=%q}", reason)
	return 0
}

// lastUsed reads a token's last_used_at (zero if NULL).
func (b credsBundle) lastUsed(t *testing.T, id string) time.Time {
	t.Helper()
	var at *time.Time
	require.NoError(t, b.ledger.Pool.QueryRow(context.Background(), `SELECT last_used_at FROM api_tokens WHERE id = $1`, id).Scan(&at))
	if at == nil {
		return time.Time{}
	}
	return *at
}

// postJSON calls an RPC on the HTTP port with an Authorization header.
func (b credsBundle) postJSON(t *testing.T, rpc, authorization, body string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, b.httpURL+"/"+rpc, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", authorization)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	_, err = io.Copy(io.Discard, res.Body)
	require.NoError(t, err)
	return res.StatusCode
}

// secretOf is the secret part of a token, which a log must never hold.
func secretOf(token string) string {
	_, secret, err := ledger.ParseToken(token)
	if err != nil || secret == "" {
		panic(fmt.Sprintf("not a token: %v", err))
	}
	return secret
}

// TestIsolationRequestLogNamesTheCaller: every request log line names the
// principal, the credential (a token's id, a certificate's fingerprint)
// and the source address, for gRPC calls and for calls through the HTTP
// port, whose source is the HTTP caller's. No secret is ever logged,
// whether the call is allowed or refused.
func TestIsolationRequestLogNamesTheCaller(t *testing.T) {
	t.Parallel()
	b := serveCreds(t, ledger.Config{}, server.AuthConfig{})
	conn := b.dialFrom(t, "127.0.0.1")
	created := b.createToken(t, conn, "svc-logs", 0)
	id, token := created.GetToken().GetId(), created.GetSecret()
	_, err := b.ledger.Store.GrantRole(t.Context(), ledger.RoleBinding{Principal: "svc-logs", NamespacePattern: "logs", Role: ledger.RoleWorker}, "test")
	require.NoError(t, err)
	require.NoError(t, b.auth.Load(t.Context()))

	client := ledgerv1.NewLedgerServiceClient(conn)
	_, err = client.Reserve(as(t.Context(), token), &ledgerv1.ReserveRequest{Namespace: "logs", Key: "grpc", Owner: "w"})
	require.NoError(t, err)
	wrong := token[:len(token)-4] + "AAAA"
	_, err = client.Reserve(as(t.Context(), wrong), &ledgerv1.ReserveRequest{Namespace: "logs", Key: "grpc-refused", Owner: "w"})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	require.Equal(t, http.StatusOK, b.postJSON(t, "ledger.v1.LedgerService/Reserve", "Bearer "+token, `{"namespace": "logs", "key": "http", "owner": "w"}`))
	require.Equal(t, http.StatusUnauthorized, b.postJSON(t, "ledger.v1.LedgerService/Reserve", "Bearer "+wrong, `{"namespace": "logs", "key": "http-refused", "owner": "w"}`))

	byKey := map[string]map[string]any{}
	for _, line := range b.lines(t, "finished call") {
		if key, ok := line["key"].(string); ok {
			byKey[key] = line
		}
	}
	for _, key := range []string{"grpc", "http"} {
		line := byKey[key]
		require.NotNil(t, line, key)
		require.Equal(t, "svc-logs", line["principal"], key)
		require.Equal(t, "token:"+id, line["credential"], key)
		require.Regexp(t, `^127\.0\.0\.1:\d+$`, line["peer.address"], key)
	}
	line := byKey["grpc-refused"]
	require.NotNil(t, line)
	require.Nil(t, line["principal"], "a wrong secret proves no principal")
	require.Equal(t, "token:"+id, line["credential"])
	require.Equal(t, "wrong_secret", line["auth.refusal"])
	require.Regexp(t, `^127\.0\.0\.1:\d+$`, line["peer.address"])
	// The HTTP port refuses before it reads the body (so the request log has
	// no line with the key): its WARN line names the credential and source.
	require.NotContains(t, byKey, "http-refused")
	var refusals []map[string]any
	for _, line := range b.lines(t, "authentication refused") {
		if line["credential"] == "token:"+id {
			refusals = append(refusals, line)
		}
	}
	require.Len(t, refusals, 2, "one for each port")
	for _, line := range refusals {
		require.Nil(t, line["principal"])
		require.Equal(t, "wrong_secret", line["auth.refusal"])
		require.Equal(t, "WARN", line["level"])
		require.Regexp(t, `^127\.0\.0\.1:\d+$`, line["peer.address"])
	}
	require.NotEqual(t, byKey["http"]["peer.address"], b.grpcAddr, "the HTTP caller's address, not the gateway's")
	require.NotContains(t, b.log.String(), secretOf(token))
	require.NotContains(t, b.log.String(), secretOf(wrong))
	require.NotContains(t, b.log.String(), secretOf(b.root))
}

// TestIsolationRequestLogNamesTheCertificate: a call authenticated by a
// client certificate logs its principal and the certificate's SHA-256
// fingerprint.
func TestIsolationRequestLogNamesTheCertificate(t *testing.T) {
	t.Parallel()
	b := setupTLS(t, tls.RequireAndVerifyClientCert)
	alice := b.ca.Issue(t, "alice").TLSCertificate(t)
	_, err := ledgerv1.NewLedgerAdminServiceClient(b.dial(t, alice)).WhoAmI(context.Background(), &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	sum := sha256.Sum256(alice.Certificate[0])
	var line map[string]any
	for _, text := range strings.Split(strings.TrimSpace(b.log.String()), "\n") {
		var entry map[string]any
		require.NoError(t, json.Unmarshal([]byte(text), &entry))
		if entry["msg"] == "finished call" && entry["grpc.method"] == "WhoAmI" {
			line = entry
		}
	}
	require.NotNil(t, line)
	require.Equal(t, "cert:alice", line["principal"])
	require.Equal(t, "cert-sha256:"+hex.EncodeToString(sum[:]), line["credential"])
	require.Regexp(t, `^127\.0\.0\.1:\d+$`, line["peer.address"])
}

// TestIsolationRevokedTokenUseIsAudited: each use of a revoked token is
// refused, logged at WARN with its reason, credential and source, and
// counted; it writes one credential_refused platform event (not one per
// call), and the caller is told no more than before.
func TestIsolationRevokedTokenUseIsAudited(t *testing.T) {
	t.Parallel()
	b := serveCreds(t, ledger.Config{}, server.AuthConfig{})
	conn := b.dialFrom(t, "127.0.0.1")
	created := b.createToken(t, conn, "svc-gone", 0)
	id, token := created.GetToken().GetId(), created.GetSecret()
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)
	_, err := admin.RevokeToken(as(t.Context(), b.root), &ledgerv1.RevokeTokenRequest{Id: id, Reason: "leaked"})
	require.NoError(t, err)

	const uses = 5
	for range uses {
		_, err := admin.WhoAmI(as(t.Context(), token), &ledgerv1.WhoAmIRequest{})
		require.Equal(t, codes.Unauthenticated, status.Code(err))
		require.Equal(t, "invalid token: revoked", status.Convert(err).Message(), "what the holder of the secret was told before")
	}

	eventCount := func() int {
		var n int
		require.NoError(t, b.ledger.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM events WHERE kind = 'credential_refused'`).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return eventCount() > 0 }, time.Minute, 20*time.Millisecond)
	events, err := admin.ListEvents(as(t.Context(), b.root), &ledgerv1.ListEventsRequest{
		Kinds: []ledgerv1.EventKind{ledgerv1.EventKind_EVENT_KIND_CREDENTIAL_REFUSED}})
	require.NoError(t, err)
	require.Len(t, events.GetEvents(), 1, "one event per token per minute, not one per call")
	event := events.GetEvents()[0]
	require.Empty(t, event.GetNamespace())
	require.Equal(t, "svc-gone", event.GetCaller())
	detail := event.GetDetail().AsMap()
	require.Equal(t, id, detail["token_id"])
	require.Equal(t, "svc-gone", detail["principal"])
	require.Equal(t, "revoked", detail["reason"])
	require.Regexp(t, `^127\.0\.0\.1:\d+$`, detail["source"])
	require.Equal(t, 1, eventCount(), "the later refusals of the minute wrote nothing")

	var warned int
	for _, line := range b.lines(t, "authentication refused") {
		require.Equal(t, "WARN", line["level"])
		if line["auth.refusal"] == "revoked" {
			warned++
			require.Equal(t, "token:"+id, line["credential"])
			require.Equal(t, "svc-gone", line["principal"])
			require.Regexp(t, `^127\.0\.0\.1:\d+$`, line["peer.address"])
		}
	}
	require.Equal(t, uses, warned)
	require.Equal(t, float64(uses), b.authFailures(t, "revoked"))
	require.NotContains(t, b.log.String(), secretOf(token))
}

// TestIsolationLastUsedAt: a used token's last_used_at is written within a
// refresh, and moves with later use; an idle token's stays unset.
// ListTokens returns it.
func TestIsolationLastUsedAt(t *testing.T) {
	t.Parallel()
	b := serveCreds(t, ledger.Config{}, server.AuthConfig{})
	conn := b.dialFrom(t, "127.0.0.1")
	used, idle := b.createToken(t, conn, "svc-used", 0), b.createToken(t, conn, "svc-idle", 0)
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)
	whoami := func() {
		_, err := admin.WhoAmI(as(t.Context(), used.GetSecret()), &ledgerv1.WhoAmIRequest{})
		require.NoError(t, err)
	}

	before := time.Now()
	whoami()
	require.Eventually(t, func() bool { return !b.lastUsed(t, used.GetToken().GetId()).IsZero() }, time.Minute, 20*time.Millisecond)
	first := b.lastUsed(t, used.GetToken().GetId())
	require.WithinRange(t, first, before.Add(-time.Second), time.Now())

	whoami()
	require.Eventually(t, func() bool { return b.lastUsed(t, used.GetToken().GetId()).After(first) }, time.Minute, 20*time.Millisecond)
	require.True(t, b.lastUsed(t, idle.GetToken().GetId()).IsZero(), "an idle token has no last use")

	list, err := admin.ListTokens(as(t.Context(), b.root), &ledgerv1.ListTokensRequest{})
	require.NoError(t, err)
	for _, token := range list.GetTokens() {
		switch token.GetId() {
		case used.GetToken().GetId():
			require.NotNil(t, token.GetLastUsedAt())
		case idle.GetToken().GetId():
			require.Nil(t, token.GetLastUsedAt())
		}
	}
}

// TestIsolationTokenRotation walks the documented rotation: create the new
// token, deploy it, watch the old token's last_used_at stop moving, revoke
// the old one.
func TestIsolationTokenRotation(t *testing.T) {
	t.Parallel()
	b := serveCreds(t, ledger.Config{}, server.AuthConfig{})
	conn := b.dialFrom(t, "127.0.0.1")
	_, err := b.ledger.Store.GrantRole(t.Context(), ledger.RoleBinding{Principal: "svc-pipe", NamespacePattern: "pipe", Role: ledger.RoleWorker}, "test")
	require.NoError(t, err)
	require.NoError(t, b.auth.Load(t.Context()))
	old := b.createToken(t, conn, "svc-pipe", 30*24*time.Hour)
	client := ledgerv1.NewLedgerServiceClient(conn)
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)
	work := func(token, key string) error {
		_, err := client.Reserve(as(t.Context(), token), &ledgerv1.ReserveRequest{Namespace: "pipe", Key: key, Owner: "w"})
		return err
	}
	require.NoError(t, work(old.GetSecret(), "before"))

	// 1. Create the new token.
	next := b.createToken(t, conn, "svc-pipe", 30*24*time.Hour)
	// 2. Deploy it: the workers switch.
	switched := time.Now()
	require.NoError(t, work(next.GetSecret(), "after"))
	// 3. Watch: the new token's use is written, and the old one's last use
	// stays before the switch.
	lastUse := func(id string) time.Time {
		list, err := admin.ListTokens(as(t.Context(), b.root), &ledgerv1.ListTokensRequest{})
		require.NoError(t, err)
		for _, token := range list.GetTokens() {
			if token.GetId() == id && token.GetLastUsedAt() != nil {
				return token.GetLastUsedAt().AsTime()
			}
		}
		return time.Time{}
	}
	require.Eventually(t, func() bool { return !lastUse(next.GetToken().GetId()).IsZero() }, time.Minute, 20*time.Millisecond)
	oldLastUse := lastUse(old.GetToken().GetId())
	require.False(t, oldLastUse.IsZero())
	require.True(t, oldLastUse.Before(switched), "the old token is idle since the switch")
	// 4. Revoke the old token: it is refused, the new one works.
	_, err = admin.RevokeToken(as(t.Context(), b.root), &ledgerv1.RevokeTokenRequest{Id: old.GetToken().GetId(), Reason: "rotated"})
	require.NoError(t, err)
	require.Equal(t, codes.Unauthenticated, status.Code(work(old.GetSecret(), "old")))
	require.NoError(t, work(next.GetSecret(), "new"))
}

// TestIsolationTokenMaxTTL: a token may not outlive the server's maximum;
// one asked for without a ttl gets it, the bootstrap token included; a
// longer one is INVALID_ARGUMENT naming ttl and the limit, and nothing is
// stored.
func TestIsolationTokenMaxTTL(t *testing.T) {
	t.Parallel()
	b := serveCreds(t, ledger.Config{MaxTokenTTL: 24 * time.Hour}, server.AuthConfig{})
	conn := b.dialFrom(t, "127.0.0.1")
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)

	list, err := admin.ListTokens(as(t.Context(), b.root), &ledgerv1.ListTokensRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetTokens(), 1)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), list.GetTokens()[0].GetExpiresAt().AsTime(), time.Minute, "the bootstrap token")

	before := counts(t, b.ledger)
	_, err = admin.CreateToken(as(t.Context(), b.root), &ledgerv1.CreateTokenRequest{
		Principal: "svc-forever", Ttl: durationpb.New(48 * time.Hour), Reason: "test"})
	st := requireReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	require.Contains(t, st.Message(), "24h0m0s")
	var violations []string
	for _, detail := range st.Details() {
		if br, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				violations = append(violations, v.GetField())
			}
		}
	}
	require.Equal(t, []string{"ttl"}, violations)
	require.Equal(t, before, counts(t, b.ledger), "nothing stored")

	created := b.createToken(t, conn, "svc-default", 0)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), created.GetToken().GetExpiresAt().AsTime(), time.Minute)
	created = b.createToken(t, conn, "svc-short", time.Hour)
	require.WithinDuration(t, time.Now().Add(time.Hour), created.GetToken().GetExpiresAt().AsTime(), time.Minute)
}

// TestIsolationBearerSchemeIsCaseInsensitive: RFC 6750's scheme is
// case-insensitive.
func TestIsolationBearerSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	b := serveCreds(t, ledger.Config{}, server.AuthConfig{})
	admin := ledgerv1.NewLedgerAdminServiceClient(b.dialFrom(t, "127.0.0.1"))
	for _, scheme := range []string{"bearer", "BEARER", "Bearer", "bEaReR"} {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", scheme+" "+b.root)
		who, err := admin.WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
		require.NoError(t, err, scheme)
		require.Equal(t, "root", who.GetPrincipal())
	}
	require.Equal(t, http.StatusOK, b.postJSON(t, "ledger.v1.LedgerAdminService/WhoAmI", "bearer "+b.root, `{}`))
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Basic "+b.root)
	_, err := admin.WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Equal(t, float64(1), b.authFailures(t, "malformed"))
}

// TestIsolationPatternNeedsSeparator: a new prefix pattern must end in a
// separator before its '*' ("team-a*" would also cover "team-ab"); a
// binding made before the rule keeps working, is named in a WARN when the
// bindings are loaded, and can be revoked.
func TestIsolationPatternNeedsSeparator(t *testing.T) {
	t.Parallel()
	b := serveCreds(t, ledger.Config{}, server.AuthConfig{})
	conn := b.dialFrom(t, "127.0.0.1")
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)
	grant := func(pattern string) error {
		_, err := admin.GrantRole(as(t.Context(), b.root), &ledgerv1.GrantRoleRequest{Reason: "test",
			Binding: &ledgerv1.RoleBinding{Principal: "svc-team-a", NamespacePattern: pattern, Role: ledgerv1.Role_ROLE_WORKER}})
		return err
	}

	before := counts(t, b.ledger)
	st := requireReason(t, grant("team-a*"), codes.InvalidArgument, server.ReasonInvalidArgument)
	require.Contains(t, st.Message(), "namespace_pattern")
	require.Contains(t, st.Message(), "team-a-*")
	require.Equal(t, before, counts(t, b.ledger), "nothing stored")
	for _, pattern := range []string{"team-a-*", "team_a_*", "team.a.*", "team-a", "*"} {
		require.NoError(t, grant(pattern), pattern)
	}

	// A binding from before the rule.
	_, err := b.ledger.Pool.Exec(t.Context(), `INSERT INTO role_bindings (principal, namespace_pattern, role, created_by)
		VALUES ('svc-team-b', 'team-b*', 'worker', 'test')`)
	require.NoError(t, err)
	require.NoError(t, b.auth.Load(t.Context()))
	require.NoError(t, b.auth.Load(t.Context()))
	var warned int
	for _, line := range b.lines(t, "a role binding's prefix pattern does not end in a separator, so it also covers namespaces that merely begin alike: grant one that does (e.g. 'team-a-*' for 'team-a*') and revoke this one") {
		require.Equal(t, "WARN", line["level"])
		require.Equal(t, "team-b*", line["namespace_pattern"])
		require.Equal(t, "svc-team-b", line["principal"])
		warned++
	}
	require.Equal(t, 1, warned, "named once, not at every refresh")
	_, err = admin.RevokeRole(as(t.Context(), b.root), &ledgerv1.RevokeRoleRequest{Reason: "test",
		Binding: &ledgerv1.RoleBinding{Principal: "svc-team-b", NamespacePattern: "team-b*", Role: ledgerv1.Role_ROLE_WORKER}})
	require.NoError(t, err, "a legacy binding can be revoked")
}

// TestIsolationFailedAuthLimitedPerSource: a source address that fails
// authentication more than its burst is refused, before its credentials
// are checked, with RESOURCE_EXHAUSTED and a RetryInfo; its successful
// calls took nothing from the limit; another source still authenticates,
// and its failures count on its own.
func TestIsolationFailedAuthLimitedPerSource(t *testing.T) {
	t.Parallel()
	const burst = 5
	b := serveCreds(t, ledger.Config{}, server.AuthConfig{FailedAuthLimit: server.Rate{PerSecond: 0.001, Burst: burst}})
	attacker := ledgerv1.NewLedgerAdminServiceClient(b.dialFrom(t, "127.0.0.1"))
	neighbour := ledgerv1.NewLedgerAdminServiceClient(b.dialFrom(t, "127.0.0.2"))
	whoami := func(client ledgerv1.LedgerAdminServiceClient, token string) error {
		_, err := client.WhoAmI(as(t.Context(), token), &ledgerv1.WhoAmIRequest{})
		return err
	}
	bad := "ldg_0123456789abcdef_guess"

	for range 3 * burst {
		require.NoError(t, whoami(attacker, b.root), "successful calls take nothing from the limit")
	}
	for i := range burst {
		require.Equal(t, codes.Unauthenticated, status.Code(whoami(attacker, bad)), "failure %d", i+1)
	}
	for range 3 {
		err := whoami(attacker, b.root)
		requireReason(t, err, codes.ResourceExhausted, server.ReasonRateLimited)
		var retry *errdetails.RetryInfo
		for _, detail := range status.Convert(err).Details() {
			if r, ok := detail.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
		require.NotNil(t, retry, "the limited source is told when to retry")
		require.Positive(t, retry.GetRetryDelay().AsDuration())
	}

	require.NoError(t, whoami(neighbour, b.root), "another source still authenticates")
	require.Equal(t, codes.Unauthenticated, status.Code(whoami(neighbour, bad)), "and fails on its own count")

	require.Equal(t, float64(burst+1), b.authFailures(t, "unknown_token"))
	require.Equal(t, float64(3), b.authFailures(t, "rate_limited"))
	limited := b.lines(t, "authentication refused: too many failures from this source; refusing it until its limit refills")
	require.Len(t, limited, 1, "logged once per stretch, not once per call")
	require.Equal(t, "WARN", limited[0]["level"])
	require.Regexp(t, `^127\.0\.0\.1:\d+$`, limited[0]["peer.address"])
}
