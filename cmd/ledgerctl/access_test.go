package main

import (
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/tlstest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// startAuthLedgerd serves a fresh ledger with authentication on a loopback
// TCP port, and returns its address and the token of a platform admin,
// "root" (made as `ledgerd bootstrap` makes it).
func startAuthLedgerd(t *testing.T) (addr, rootToken string) {
	t.Helper()
	b := ledgertest.Store(t, testConfig)
	_, rootToken, err := b.Store.Bootstrap(t.Context(), "root")
	require.NoError(t, err)
	auth := ledgertest.RunAuth(t, b.Store)
	return ledgertest.ServeTCP(t, b.Store, server.Config{Auth: auth}), rootToken
}

// as is the environment of a ledgerctl that sends token (none if empty).
func as(addr, token string) map[string]string {
	return map[string]string{envAddr: addr, envToken: token}
}

// okAs runs ledgerctl with env and requires it to succeed.
func okAs(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	r := ctlEnv(t, env, args...)
	require.Equal(t, exitOK, r.code, "ledgerctl %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	return r.stdout
}

// tokenFile writes token to a file of its own, readable by its owner only.
func tokenFile(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte(token+"\n"), 0o600))
	return path
}

// TestAccess follows a token's life: a platform admin creates a token for
// a worker and grants it the worker role in "ns-*"; the token works for
// the Go client's Reserve and for reads, and is refused where the role does
// not reach; once it is revoked, it is refused everywhere.
func TestAccess(t *testing.T) {
	t.Parallel()
	addr, rootToken := startAuthLedgerd(t)
	root := as(addr, rootToken)

	golden(t, "whoami-platform-admin", okAs(t, root, "whoami"))
	golden(t, "whoami-platform-admin-json", okAs(t, root, "whoami", "-o", "json"))

	// The worker's token, as JSON.
	r := ctlEnv(t, root, "tokens", "create", "--principal", "svc-worker", "--description", "ns pipelines",
		"--ttl", "90d", "--reason", "new pipeline", "-o", "json")
	require.Equal(t, exitOK, r.code, r.stderr)
	golden(t, "tokens-create-json", r.stdout)
	var created struct {
		Token struct {
			ID        string `json:"id"`
			ExpiresAt string `json:"expires_at"`
		} `json:"token"`
		Secret string `json:"secret"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &created))
	require.True(t, strings.HasPrefix(created.Secret, "ldg_"+created.Token.ID+"_"), created.Secret)
	expires, err := time.Parse(time.RFC3339Nano, created.Token.ExpiresAt)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(90*24*time.Hour), expires, time.Minute)
	require.Contains(t, r.stderr, "WARNING: store the token now: it cannot be shown again")
	workerToken := created.Secret

	// A token without roles, as a table: stdout is the token alone.
	r = ctlEnv(t, root, "tokens", "create", "--principal", "svc-nobody", "--reason", "a principal without roles")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Regexp(t, `^ldg_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\n$`, r.stdout)
	golden(t, "tokens-create", r.stdout)
	golden(t, "tokens-create-stderr", r.stderr)
	nobody := as(addr, strings.TrimSpace(r.stdout))

	golden(t, "roles-grant", okAs(t, root, "roles", "grant", "svc-worker", "worker", "ns-*", "--reason", "ns pipelines"))
	golden(t, "roles-grant-again-json", okAs(t, root, "roles", "grant", "svc-worker", "WORKER", "ns-*", "--reason", "again", "-o", "json"))

	// The worker's token works for Reserve, through the Go client.
	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure(), ledgerclient.WithToken(workerToken))
	require.NoError(t, err)
	defer func() { require.NoError(t, client.Close()) }()
	reserved, err := client.Reserve(t.Context(), &ledgerv1.ReserveRequest{Namespace: "ns-a", Key: "k", Owner: "w1"})
	require.NoError(t, err)
	require.NotNil(t, reserved.GetAcquired())
	_, err = client.Reserve(t.Context(), &ledgerv1.ReserveRequest{Namespace: "other", Key: "k", Owner: "w1"})
	require.ErrorIs(t, err, ledgerclient.ErrPermissionDenied, "the role does not reach namespace other")

	// ... and for ledgerctl, from a file.
	worker := map[string]string{envAddr: addr, envTokenFile: tokenFile(t, workerToken)}
	golden(t, "whoami", okAs(t, worker, "whoami"))
	require.Contains(t, okAs(t, worker, "get", "ns-a", "k"), "LEASED", "a worker may look keys up")

	// Where no role reaches, the answer is 7.
	r = ctlEnv(t, nobody, "get", "ns-a", "k")
	require.Equal(t, exitNotAllowed, r.code, r.stderr)
	require.Equal(t, `ledgerctl get: PERMISSION_DENIED: permission denied: svc-nobody may not call Lookup in namespace "ns-a"`+
		" ('ledgerctl whoami' shows your role bindings)\n", r.stderr)
	require.Empty(t, r.stdout)
	golden(t, "whoami-no-roles", okAs(t, nobody, "whoami"))
	r = ctlEnv(t, worker, "history", "ns-a", "k")
	require.Equal(t, exitNotAllowed, r.code, "a worker is not a reader: %s", r.stderr)
	r = ctlEnv(t, worker, "tokens", "list")
	require.Equal(t, exitNotAllowed, r.code, "a worker does not manage tokens: %s", r.stderr)
	require.Contains(t, r.stderr, "ledgerctl tokens list: PERMISSION_DENIED: ")

	// Every token was used (svc-nobody's too: refused calls authenticate
	// first); each shows its last use once its ledgerd has written it.
	require.Eventually(t, func() bool {
		return !strings.Contains(okAs(t, root, "tokens", "list", "-o", "json"), `"last_used_at":null`)
	}, time.Minute, 50*time.Millisecond)
	golden(t, "tokens-list", okAs(t, root, "tokens", "list"))
	golden(t, "tokens-list-json", okAs(t, root, "tokens", "list", "-o", "json"))
	golden(t, "roles-list", okAs(t, root, "roles", "list"))
	golden(t, "roles-list-json", okAs(t, root, "roles", "list", "-o", "json"))

	// Revoked: refused at once, with exit code 7.
	golden(t, "tokens-revoke", okAs(t, root, "tokens", "revoke", created.Token.ID, "--reason", "leaked in a log"))
	golden(t, "tokens-revoke-again-json", okAs(t, root, "tokens", "revoke", created.Token.ID, "--reason", "again", "-o", "json"))
	for _, args := range [][]string{{"whoami"}, {"get", "ns-a", "k"}} {
		r = ctlEnv(t, worker, args...)
		require.Equal(t, exitNotAllowed, r.code, r.stderr)
		require.Equal(t, "ledgerctl "+args[0]+": UNAUTHENTICATED: invalid token: revoked (the token from LEDGERCTL_TOKEN_FILE "+
			worker[envTokenFile]+")\n", r.stderr)
	}
	_, err = client.Reserve(t.Context(), &ledgerv1.ReserveRequest{Namespace: "ns-a", Key: "k2", Owner: "w1"})
	require.ErrorIs(t, err, ledgerclient.ErrUnauthenticated)

	golden(t, "roles-revoke", okAs(t, root, "roles", "revoke", "svc-worker", "worker", "ns-*", "--reason", "pipeline retired"))
	r = ctlEnv(t, root, "roles", "revoke", "svc-worker", "worker", "ns-*", "--reason", "again")
	require.Equal(t, exitNotFound, r.code, r.stderr)
	require.Contains(t, r.stderr, "ledgerctl roles revoke: NOT_FOUND: ")
	golden(t, "roles-list-after-revoke", okAs(t, root, "roles", "list"))
}

// TestAccessFailures checks the exit codes and messages of the token flags
// and the access commands.
func TestAccessFailures(t *testing.T) {
	t.Parallel()
	addr, rootToken := startAuthLedgerd(t)
	rootFile := tokenFile(t, rootToken)
	emptyFile := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(emptyFile, nil, 0o600))

	for _, tc := range []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string // a part of it
	}{
		{"no token", as(addr, ""), []string{"whoami"}, exitNotAllowed,
			"ledgerctl whoami: UNAUTHENTICATED: credentials required: send 'authorization: Bearer <token>' or a client certificate " +
				"(no API token given: use --token-file PATH, LEDGERCTL_TOKEN_FILE or LEDGERCTL_TOKEN)\n"},
		{"unknown token", as(addr, "ldg_0123456789abcdef_nope"), []string{"whoami"}, exitNotAllowed,
			"ledgerctl whoami: UNAUTHENTICATED: invalid token (the token from LEDGERCTL_TOKEN)\n"},
		{"--token wins over the environment", as(addr, "ldg_0123456789abcdef_nope"), []string{"whoami", "--token", rootToken}, exitOK, ""},
		{"--token-file wins over the environment", as(addr, "ldg_0123456789abcdef_nope"), []string{"--token-file", rootFile, "whoami"}, exitOK, ""},
		{"LEDGERCTL_TOKEN_FILE", map[string]string{envAddr: addr, envTokenFile: rootFile}, []string{"whoami"}, exitOK, ""},
		{"--token and --token-file", as(addr, ""), []string{"whoami", "--token", rootToken, "--token-file", rootFile}, exitUsage,
			"ledgerctl whoami: give --token or --token-file, not both\n"},
		{"both variables", map[string]string{envAddr: addr, envToken: rootToken, envTokenFile: rootFile}, []string{"whoami"}, exitUsage,
			"ledgerctl whoami: LEDGERCTL_TOKEN and LEDGERCTL_TOKEN_FILE are both set: unset one\n"},
		{"missing token file", as(addr, ""), []string{"whoami", "--token-file", "/nonexistent/token"}, exitUsage,
			"ledgerctl whoami: --token-file: open /nonexistent/token: no such file or directory\n"},
		{"empty token file", as(addr, ""), []string{"whoami", "--token-file", emptyFile}, exitUsage,
			"ledgerctl whoami: --token-file " + emptyFile + ": the file is empty\n"},
		{"not a token", as(addr, ""), []string{"whoami", "--token", "Bearer " + rootToken}, exitUsage,
			"ledgerctl whoami: --token: not a ledgerd API token (one word that starts with ldg_)\n"},
		{"no principal", as(addr, rootToken), []string{"tokens", "create", "--reason", "r"}, exitUsage,
			"ledgerctl tokens create: --principal is required\n"},
		{"no reason", as(addr, rootToken), []string{"tokens", "create", "--principal", "p"}, exitUsage,
			"ledgerctl tokens create: --reason is required"},
		{"bad ttl", as(addr, rootToken), []string{"tokens", "create", "--principal", "p", "--ttl", "1y", "--reason", "r"}, exitUsage,
			"want a duration like 90s, 1h30m or 7d"},
		{"principal too long", as(addr, rootToken), []string{"tokens", "create", "--principal", strings.Repeat("p", 257), "--reason", "r"}, exitInvalid,
			"ledgerctl tokens create: INVALID_ARGUMENT: "},
		{"unknown token id", as(addr, rootToken), []string{"tokens", "revoke", "0123456789abcdef", "--reason", "r"}, exitNotFound,
			"ledgerctl tokens revoke: NOT_FOUND: "},
		{"revoke without reason", as(addr, rootToken), []string{"tokens", "revoke", "0123456789abcdef"}, exitUsage,
			"ledgerctl tokens revoke: --reason is required"},
		{"unknown role", as(addr, rootToken), []string{"roles", "grant", "p", "owner", "ns", "--reason", "r"}, exitUsage,
			`ledgerctl roles grant: unknown role "owner"; want worker, reader, admin or platform-admin`},
		{"missing pattern", as(addr, rootToken), []string{"roles", "grant", "p", "worker", "--reason", "r"}, exitUsage,
			"ledgerctl roles grant: missing arguments: want PRINCIPAL ROLE PATTERN"},
		{"platform admin of a namespace", as(addr, rootToken), []string{"roles", "grant", "p", "platform-admin", "ns-*", "--reason", "r"}, exitInvalid,
			"ledgerctl roles grant: INVALID_ARGUMENT: "},
		{"bad pattern", as(addr, rootToken), []string{"roles", "grant", "p", "reader", "bad pattern!", "--reason", "r"}, exitInvalid,
			"ledgerctl roles grant: INVALID_ARGUMENT: "},
		{"unknown binding", as(addr, rootToken), []string{"roles", "revoke", "p", "reader", "ns", "--reason", "r"}, exitNotFound,
			"ledgerctl roles revoke: NOT_FOUND: "},
		{"unknown role to revoke", as(addr, rootToken), []string{"roles", "revoke", "p", "-", "ns", "--reason", "r"}, exitUsage,
			`unknown role "-"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ctlEnv(t, tc.env, tc.args...)
			require.Equal(t, tc.code, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			require.Contains(t, r.stderr, tc.stderr)
			if tc.code != exitOK {
				require.Empty(t, r.stdout)
			}
			require.NotContains(t, r.stderr, strings.TrimPrefix(rootToken, "ldg_"), "a token is never printed")
		})
	}
}

// TestWhoAmIWithoutAuthentication: a ledgerd without authentication says
// so, and ignores a token.
func TestWhoAmIWithoutAuthentication(t *testing.T) {
	t.Parallel()
	addr := startLedgerd(t)
	golden(t, "whoami-anonymous", okAs(t, as(addr, ""), "whoami"))
	require.Equal(t, "{\"principal\":\"anonymous\",\"bindings\":[]}\n", okAs(t, as(addr, "ldg_0123456789abcdef_x"), "whoami", "-o", "json"))
}

// TestClientCertificate: against a ledgerd that requires client
// certificates, --ca-file, --cert-file and --key-file (or their
// environment variables) authenticate as cert:<CN>; without a certificate
// the connection fails, and inconsistent flags are usage errors.
func TestClientCertificate(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, testConfig)
	_, err := b.Store.GrantRole(t.Context(), ledger.RoleBinding{Principal: "cert:alice", NamespacePattern: "ns", Role: ledger.RoleReader}, "test")
	require.NoError(t, err)
	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	serverCert, serverKey := ca.Issue(t, "ledgerd").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	tlstest.WriteFile(t, caFile, ca.PEM)
	serverTLS, err := server.NewTLS(server.TLSConfig{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: caFile, ClientAuth: tls.RequireAndVerifyClientCert})
	require.NoError(t, err)
	addr := ledgertest.ServeTCP(t, b.Store, server.Config{Auth: ledgertest.RunAuth(t, b.Store), ServerOptions: []grpc.ServerOption{serverTLS.ServerOption()}})
	certFile, keyFile := ca.Issue(t, "alice").WriteFiles(t, dir, "alice")

	out := okAs(t, map[string]string{envAddr: addr, envCAFile: caFile, envCertFile: certFile, envKeyFile: keyFile}, "whoami")
	require.Regexp(t, `principal\s+cert:alice\n`, out)
	out = okAs(t, map[string]string{envAddr: addr}, "whoami", "--ca-file", caFile, "--cert-file", certFile, "--key-file", keyFile, "-o", "json")
	require.Contains(t, out, `"principal":"cert:alice"`)

	r := ctlEnv(t, map[string]string{envAddr: addr, envCAFile: caFile}, "whoami", "--timeout", "2s")
	require.Equal(t, exitUnavailable, r.code, r.stderr)
	for _, args := range [][]string{
		{"--cert-file", certFile},
		{"--ca-file", caFile, "--insecure"},
		{"--ca-file", keyFile},
	} {
		r := ctlEnv(t, map[string]string{envAddr: addr}, append([]string{"whoami"}, args...)...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
}
