package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/internal/tlstest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// credentialRows counts the tokens and role bindings stored in b's schema.
func credentialRows(t *testing.T, b ledgertest.Bundle) (tokens, bindings int) {
	t.Helper()
	require.NoError(t, b.Pool.QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM api_tokens), (SELECT count(*) FROM role_bindings)`).Scan(&tokens, &bindings))
	return tokens, bindings
}

// TestIsolationDevModeRefusesDatabaseWithCredentials: `ledgerd serve
// --insecure-dev` over a database that holds a token or a role binding (one
// that secure replicas use) refuses to start, saying why and what to do,
// instead of serving it to every local caller as a platform admin.
func TestIsolationDevModeRefusesDatabaseWithCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		add              func(ctx context.Context, store *ledger.Store) error
		tokens, bindings int
	}{
		{"bootstrapped", func(ctx context.Context, store *ledger.Store) error {
			_, _, err := store.Bootstrap(ctx, "root")
			return err
		}, 1, 1},
		{"a revoked token only", func(ctx context.Context, store *ledger.Store) error {
			token, _, err := store.CreateToken(ctx, "svc", "test", 0, "test")
			if err == nil {
				_, err = store.RevokeToken(ctx, token.ID, "test")
			}
			return err
		}, 1, 0},
		{"a role binding only", func(ctx context.Context, store *ledger.Store) error {
			_, err := store.GrantRole(ctx, ledger.RoleBinding{Principal: "cert:alice", NamespacePattern: "ns", Role: ledger.RoleWorker}, "test")
			return err
		}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.Schema(t)
			b := ledgertest.StoreAt(t, url, ledger.Config{})
			require.NoError(t, tc.add(context.Background(), b.Store))

			// Were it to serve, it would serve until this deadline and
			// return nil.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr ledgertest.LogBuffer
			err := run(ctx, []string{"serve", "--insecure-dev", "--database-url", url, "--listen-addr", "127.0.0.1:0",
				"--http-addr", "127.0.0.1:0", "--log-format", "json"}, env(nil), &stdout, &stderr)
			require.ErrorIs(t, err, server.ErrStartRefused, "stdout: %s", stdout.String())
			require.NoError(t, ctx.Err(), "refused at once, not after serving")
			require.ErrorContains(t, err, "--insecure-dev serves without authentication")
			require.ErrorContains(t, err, "Point --database-url at a database of its own")
			require.NotContains(t, stdout.String(), `"msg":"ledgerd serving"`)
			tokens, bindings := credentialRows(t, b)
			require.Equal(t, []int{tc.tokens, tc.bindings}, []int{tokens, bindings}, "nothing changed")
		})
	}
}

// TestIsolationDevModeStopsWhenDatabaseGainsCredentials: a development
// ledgerd whose database gains a credential while it serves (a secure
// replica bootstrapped on it) stops, rather than go on serving that
// database without authentication.
func TestIsolationDevModeStopsWhenDatabaseGainsCredentials(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": url, "LEDGER_AUTH_REFRESH_INTERVAL": "50ms"})
	b := ledgertest.StoreAt(t, url, ledger.Config{})
	_, _, err := b.Store.Bootstrap(context.Background(), "root")
	require.NoError(t, err)

	select {
	case <-d.done:
	case <-time.After(time.Minute):
		t.Fatalf("still serving a database with credentials; stdout: %s", d.stdout)
	}
	err = d.stop()
	require.ErrorContains(t, err, "stopping: --insecure-dev serves without authentication")
	require.ErrorContains(t, err, "holds 1 API tokens and 1 role bindings")
	require.Contains(t, d.stdout.String(), `"msg":"development mode: the database now holds credentials; stopping"`)
}

// TestIsolationDevModeRefusesCredentialRPCs: without authentication, the
// token and role RPCs are refused on both ports (PERMISSION_DENIED), so
// that a development ledgerd cannot mint a credential that secure replicas
// would honour; nothing is stored.
func TestIsolationDevModeRefusesCredentialRPCs(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": url})
	b := ledgertest.StoreAt(t, url, ledger.Config{})
	ctx := context.Background()

	conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)
	binding := &ledgerv1.RoleBinding{Principal: "mallory", NamespacePattern: "*", Role: ledgerv1.Role_ROLE_PLATFORM_ADMIN}
	calls := map[string]func() error{
		"CreateToken": func() error {
			_, err := admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{Principal: "mallory", Reason: "r"})
			return err
		},
		"GrantRole": func() error {
			_, err := admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Binding: binding, Reason: "r"})
			return err
		},
		"RevokeRole": func() error {
			_, err := admin.RevokeRole(ctx, &ledgerv1.RevokeRoleRequest{Binding: binding, Reason: "r"})
			return err
		},
		"RevokeToken": func() error {
			_, err := admin.RevokeToken(ctx, &ledgerv1.RevokeTokenRequest{Id: "0123456789abcdef", Reason: "r"})
			return err
		},
		"ListTokens": func() error {
			_, err := admin.ListTokens(ctx, &ledgerv1.ListTokensRequest{})
			return err
		},
		"ListRoleBindings": func() error {
			_, err := admin.ListRoleBindings(ctx, &ledgerv1.ListRoleBindingsRequest{})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%s: %v", name, err)
		require.ErrorContains(t, err, "development mode", name)
	}
	for rpc, body := range map[string]string{
		"CreateToken": `{"principal": "mallory", "reason": "r"}`,
		"GrantRole":   `{"binding": {"principal": "mallory", "namespacePattern": "*", "role": "ROLE_PLATFORM_ADMIN"}, "reason": "r"}`,
	} {
		res, err := http.Post("http://"+d.httpAddr+"/ledger.v1.LedgerAdminService/"+rpc, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusForbidden, res.StatusCode, rpc)
	}
	tokens, bindings := credentialRows(t, b)
	require.Zero(t, tokens)
	require.Zero(t, bindings)

	// The rest of the admin API still works, as the anonymous caller.
	who, err := admin.WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "anonymous", who.GetPrincipal())
	require.NoError(t, d.stop())
}

// TestIsolationMetricsListener: with --metrics-listen-addr, /metrics (which
// names the tenants' namespaces) is served on that internal listener only:
// the public HTTP port answers 404 for it.
func TestIsolationMetricsListener(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_METRICS_LISTEN_ADDR": "127.0.0.1:0"})
	m := regexp.MustCompile(`"msg":"ledgerd serving".*"metrics_addr":"([^"]+)"`).FindStringSubmatch(d.stdout.String())
	require.NotNil(t, m, d.stdout.String())
	metricsAddr := m[1]
	require.NotEqual(t, d.httpAddr, metricsAddr)

	code, answer := d.post(t, "Reserve", `{"namespace": "tenant-secret", "key": "k", "owner": "w"}`)
	require.Equal(t, http.StatusOK, code, "%v", answer)

	code, body := d.get(t, "/metrics")
	require.Equal(t, http.StatusNotFound, code, body)
	require.NotContains(t, body, "tenant-secret")

	res, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	scraped, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, string(scraped), `ledgerd_reserve_outcomes_total{namespace="tenant-secret",outcome="acquired"} 1`)

	// The probes stay on the public port.
	code, body = d.get(t, "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, d.stop())
}

// TestIsolationServeCertificateRules runs `ledgerd serve` with SPIFFE
// principals and a pinned issuer, as flags set them: a SPIFFE certificate
// from the pinned CA is its SPIFFE ID on both ports; one from another CA of
// the client CA file is UNAUTHENTICATED on both; a certificate from no CA
// fails the handshake, which is logged at WARN and counted (on the internal
// metrics listener).
func TestIsolationServeCertificateRules(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	b := ledgertest.StoreAt(t, url, ledger.Config{})
	const worker = "spiffe://example.org/payments/worker"
	_, err := b.Store.GrantRole(context.Background(), ledger.RoleBinding{Principal: worker, NamespacePattern: "payments", Role: ledger.RoleWorker}, "test")
	require.NoError(t, err)

	pinned, partner := tlstest.NewCA(t, "tenant CA"), tlstest.NewCA(t, "partner CA")
	dir := t.TempDir()
	certFile, keyFile := pinned.Issue(t, "ledgerd").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "clients.pem")
	require.NoError(t, os.WriteFile(caFile, append(append([]byte{}, pinned.PEM...), partner.PEM...), 0o600))
	digest := sha256.Sum256(pinned.Cert.RawSubjectPublicKeyInfo)
	d := startDaemon(t, map[string]string{
		"LEDGER_DATABASE_URL": url, "LEDGER_INSECURE_DEV": "false", "LEDGER_METRICS_LISTEN_ADDR": "127.0.0.1:0",
		"LEDGER_TLS_CERT_FILE": certFile, "LEDGER_TLS_KEY_FILE": keyFile, "LEDGER_TLS_CLIENT_CA_FILE": caFile,
		"LEDGER_TLS_CLIENT_PRINCIPAL": "spiffe", "LEDGER_TLS_CLIENT_ISSUER_SPKI": "sha256:" + hex.EncodeToString(digest[:]),
	})
	metricsAddr := regexp.MustCompile(`"metrics_addr":"([^"]+)"`).FindStringSubmatch(d.stdout.String())
	require.NotNil(t, metricsAddr, d.stdout.String())

	presenting := func(pair tlstest.Pair) *tls.Config {
		cert := pair.TLSCertificate(t)
		return &tls.Config{RootCAs: pinned.Pool(), MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	}
	whoAmI := func(pair tlstest.Pair) (grpcCode codes.Code, grpcPrincipal string, httpStatus int, httpPrincipal string) {
		conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(presenting(pair))))
		require.NoError(t, err)
		defer conn.Close()
		who, err := ledgerv1.NewLedgerAdminServiceClient(conn).WhoAmI(context.Background(), &ledgerv1.WhoAmIRequest{})
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: presenting(pair)}}
		defer client.CloseIdleConnections()
		res, httpErr := client.Post("https://"+d.httpAddr+"/ledger.v1.LedgerAdminService/WhoAmI", "application/json", strings.NewReader(`{}`))
		require.NoError(t, httpErr)
		defer res.Body.Close()
		var answer map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
		principal, _ := answer["principal"].(string)
		return status.Code(err), who.GetPrincipal(), res.StatusCode, principal
	}
	code, principal, httpStatus, httpPrincipal := whoAmI(pinned.IssueWithURIs(t, "payments-worker", worker))
	require.Equal(t, []any{codes.OK, worker, http.StatusOK, worker}, []any{code, principal, httpStatus, httpPrincipal})
	code, _, httpStatus, _ = whoAmI(partner.IssueWithURIs(t, "payments-worker", worker))
	require.Equal(t, []any{codes.Unauthenticated, http.StatusUnauthorized}, []any{code, httpStatus}, "not a pinned issuer")

	stranger := presenting(tlstest.NewCA(t, "stranger CA").IssueWithURIs(t, "x", worker))
	res, err := (&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: stranger}}).Get("https://" + d.httpAddr + "/healthz")
	if err == nil {
		_ = res.Body.Close()
	}
	require.Error(t, err)
	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + metricsAddr[1] + "/metrics")
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return strings.Contains(string(body), `ledgerd_tls_handshake_failures_total{port="http",reason="untrusted_client_certificate"} 1`)
	}, time.Minute, 20*time.Millisecond)
	require.Regexp(t, `"level":"WARN","msg":"TLS handshake failed: client certificate refused","port":"http","source":"127.0.0.1:\d+","reason":"untrusted_client_certificate"`, d.stdout.String())
	require.NotContains(t, d.stdout.String(), "http: TLS handshake error", "not logged a second time, unbounded")
	require.NoError(t, d.stop())
}
