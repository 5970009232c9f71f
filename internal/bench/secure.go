package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// SideSecure is the side of a --secure run: ledgerd as platforms run it,
// with TLS, API tokens and rate limits, over a database of its own on the
// same PostgreSQL.
const SideSecure = "secure"

// The principals of a --secure run: the first platform admin, made with
// `ledgerd bootstrap`, and the workers', whose token it mints through the
// API with the worker role in the run's namespace only.
const (
	secureAdminPrincipal  = "ledgerbench-admin"
	secureWorkerPrincipal = "ledgerbench-worker"
)

// secureRateLimit is the rate limit (per second, and burst) of a secure
// ledgerd, per principal and per namespace: configured, so that every call
// pays for the check, but far above what two cores serve, so that it never
// binds (a call it refused would count as an error of the run).
const secureRateLimit = 1_000_000

// Security is what a --secure run configured and what ledgerbench checked
// of it before measuring.
type Security struct {
	// Database is the database of its own the secure ledgerd serve over,
	// on the same PostgreSQL (dropped at the end of the run).
	Database string `json:"database"`
	// TLSVersion is the version the workers' connections negotiated, with
	// the server's certificate verified against the run's CA.
	TLSVersion string `json:"tls_version"`
	// Principal is who the workers' token authenticated as (WhoAmI,
	// through a worker's connection), and Roles its role bindings.
	Principal string   `json:"principal"`
	Roles     []string `json:"roles"`
	// DatabaseTLS is the TLS version of the secure ledgerd's connections
	// to PostgreSQL ("none": plaintext). In the private cluster TLS is on,
	// with the server verified against the run's CA; with --database-url
	// it is what the URL asks for.
	DatabaseTLS string `json:"database_tls"`
	// RateLimitPerSecond is the rate limit per principal and per
	// namespace (burst the same).
	RateLimitPerSecond int `json:"rate_limit_per_second"`
}

// secureLedgerdArgs are the flags of a started secure `ledgerd serve`: no
// development mode, so tokens are checked; both ports over TLS with the
// run's certificate; rate limits that do not bind; otherwise as
// ledgerdArgs.
func secureLedgerdArgs(dbMaxConns int, httpAddr string, certs *runCertificates) []string {
	limit := strconv.Itoa(secureRateLimit)
	return []string{
		"--tls-cert-file", certs.certFile,
		"--tls-key-file", certs.keyFile,
		"--rate-limit-principal", limit, "--rate-limit-principal-burst", limit,
		"--rate-limit-namespace", limit, "--rate-limit-namespace-burst", limit,
		"--http-addr", httpAddr,
		"--sweep-interval", "0",
		"--min-lease-ttl", "10ms",
		"--max-request-timeout", "1h",
		"--db-max-conns", strconv.Itoa(dbMaxConns),
		"--log-format", "json",
		"--log-level", "warn",
	}
}

// setUpSecure starts the secure side: the run's certificates in dir, a
// database of its own beside databaseURL's (development mode refuses a
// database that holds credentials, so the two sides cannot share one),
// the first admin token (`ledgerd bootstrap`), cfg.Replicas ledgerd, and
// the workers' token, minted through the API. It records what it checked
// in report.Security.
func (r *runner) setUpSecure(ctx context.Context, bin, databaseURL, dir string, report *Report) error {
	certs, err := makeCertificates(dir)
	if err != nil {
		return err
	}
	clientTLS := certs.clientTLS()
	// The secure replicas serve /metrics over TLS too.
	r.httpTransport.TLSClientConfig = clientTLS

	database := "ledgerbench_secure_" + r.runID
	if _, err := r.pool.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{database}.Sanitize()); err != nil {
		return fmt.Errorf("--secure: create the secure side's database %s: %w", database, err)
	}
	r.onClose(func() { r.dropDatabase(databaseURL, database) })
	secureURL, err := withDatabase(databaseURL, database)
	if err != nil {
		return err
	}
	if r.privatePG != nil {
		if secureURL, err = r.postgresTLS(ctx, secureURL, certs); err != nil {
			return err
		}
	}
	adminToken, err := bootstrap(ctx, bin, secureURL)
	if err != nil {
		return err
	}
	if r.securePool, err = openPool(ctx, secureURL, r.cfg.RawConns); err != nil {
		return err
	}
	replicas, err := r.startReplicas(ctx, SideSecure, bin, secureURL, dir, func(httpAddr string) []string {
		return append(secureLedgerdArgs(r.cfg.DBMaxConns, httpAddr, certs), idleLedgerdArgs(r.cfg)...)
	}, clientTLS)
	if err != nil {
		return err
	}
	creds := grpc.WithTransportCredentials(credentials.NewTLS(clientTLS))
	adminConn, err := grpc.NewClient(replicas[0].ledgerd.Addr(), creds, grpc.WithUnaryInterceptor(withToken(adminToken)))
	if err != nil {
		return err
	}
	defer func() { _ = adminConn.Close() }()
	workerToken, err := mintWorkerToken(ctx, ledgerv1.NewLedgerAdminServiceClient(adminConn), r.cfg.Namespace)
	if err != nil {
		return err
	}
	f, err := r.dial(SideSecure, addrsOf(replicas), creds, grpc.WithUnaryInterceptor(withToken(workerToken)))
	if err != nil {
		return err
	}
	f.replicas, f.pool = replicas, r.securePool
	r.fleets[SideSecure] = f
	report.Security, err = checkSecurity(ctx, ledgerv1.NewLedgerAdminServiceClient(r.conns[len(r.conns)-1]))
	if err != nil {
		return err
	}
	report.Security.Database = database
	if err := r.securePool.QueryRow(ctx, "SELECT coalesce((SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl), 'none')").
		Scan(&report.Security.DatabaseTLS); err != nil {
		return fmt.Errorf("--secure: read the database connection's TLS: %w", err)
	}
	return nil
}

// postgresTLS turns TLS on in the private cluster, with the run's server
// certificate (valid for 127.0.0.1), and returns secureURL changed to
// require it and verify the server against the run's CA: the secure side
// reaches its database as a platform's ledgerd reaches a managed one. The
// other sides keep their sslmode=disable. TLS is turned off again at the
// end, for a cluster kept with --pg-dir.
func (r *runner) postgresTLS(ctx context.Context, secureURL string, certs *runCertificates) (string, error) {
	dataDir := r.privatePG.DataDir()
	info, err := os.Stat(dataDir)
	if err != nil {
		return "", fmt.Errorf("--secure: %w", err)
	}
	owner, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return "", errors.New("--secure: cannot tell who owns the cluster's data directory")
	}
	// PostgreSQL reads the files as the cluster's owner, and refuses a key
	// that others can read.
	files := map[string]string{certs.certFile: "ledgerbench-server.crt", certs.keyFile: "ledgerbench-server.key"}
	settings := map[string]string{}
	for from, name := range files {
		to := filepath.Join(dataDir, name)
		b, err := os.ReadFile(from)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(to, b, 0o600); err != nil { //nolint:gosec // the data directory of the cluster this run started
			return "", fmt.Errorf("--secure: %w", err)
		}
		if err := os.Chown(to, int(owner.Uid), int(owner.Gid)); err != nil {
			return "", fmt.Errorf("--secure: %w", err)
		}
		settings[name] = to
	}
	for _, statement := range []string{
		"ALTER SYSTEM SET ssl_cert_file = " + quoteLiteral(settings["ledgerbench-server.crt"]),
		"ALTER SYSTEM SET ssl_key_file = " + quoteLiteral(settings["ledgerbench-server.key"]),
		"ALTER SYSTEM SET ssl = on",
		"SELECT pg_reload_conf()",
	} {
		if _, err := r.pool.Exec(ctx, statement); err != nil {
			return "", fmt.Errorf("--secure: turn TLS on in PostgreSQL: %s: %w", statement, err)
		}
	}
	r.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, statement := range []string{"ALTER SYSTEM RESET ssl", "ALTER SYSTEM RESET ssl_cert_file", "ALTER SYSTEM RESET ssl_key_file", "SELECT pg_reload_conf()"} {
			_, _ = r.pool.Exec(ctx, statement)
		}
	})
	u, err := url.Parse(secureURL)
	if err != nil {
		return "", err
	}
	query := u.Query()
	query.Set("sslmode", "verify-full")
	query.Set("sslrootcert", certs.caFile)
	u.RawQuery = query.Encode()
	tlsURL := u.String()
	// The configuration is reloaded in the background: wait until a
	// verified TLS connection is accepted.
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := pgx.Connect(ctx, tlsURL)
		if err == nil {
			return tlsURL, conn.Close(ctx)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("--secure: PostgreSQL did not accept TLS connections: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// bootstrap applies the migrations to the secure side's database and
// makes its first platform-admin token with `ledgerd bootstrap`, which
// prints it on its last line.
func bootstrap(ctx context.Context, bin, databaseURL string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, "bootstrap", "--principal", secureAdminPrincipal)
	cmd.Env = append(os.Environ(), "LEDGER_DATABASE_URL="+databaseURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("--secure: ledgerd bootstrap: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	token := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(token, "ldg_") {
		return "", errors.New("--secure: ledgerd bootstrap printed no token on its last line")
	}
	return token, nil
}

// mintWorkerToken makes the run's namespace (a ledgerd with
// authentication makes none on first use), a token for the workers'
// principal, and binds it the worker role in that namespace only: what a
// platform hands a pipeline.
func mintWorkerToken(ctx context.Context, admin ledgerv1.LedgerAdminServiceClient, namespace string) (string, error) {
	const reason = "ledgerbench --secure"
	_, err := admin.CreateNamespace(ctx, &ledgerv1.CreateNamespaceRequest{Name: namespace, Reason: reason})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return "", fmt.Errorf("--secure: create namespace %s: %w", namespace, err)
	}
	token, err := admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{
		Principal: secureWorkerPrincipal, Description: "the workers of a ledgerbench run", Reason: reason,
	})
	if err != nil {
		return "", fmt.Errorf("--secure: create the workers' token: %w", err)
	}
	_, err = admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Reason: reason, Binding: &ledgerv1.RoleBinding{
		Principal: secureWorkerPrincipal, NamespacePattern: namespace, Role: ledgerv1.Role_ROLE_WORKER,
	}})
	if err != nil {
		return "", fmt.Errorf("--secure: grant the workers' role: %w", err)
	}
	return token.GetSecret(), nil
}

// checkSecurity asks, through a worker's connection and with its token,
// who the caller is, and reads the TLS version the connection negotiated.
func checkSecurity(ctx context.Context, admin ledgerv1.LedgerAdminServiceClient) (*Security, error) {
	var p peer.Peer
	who, err := admin.WhoAmI(ctx, &ledgerv1.WhoAmIRequest{}, grpc.Peer(&p))
	if err != nil {
		return nil, fmt.Errorf("--secure: WhoAmI with the workers' token: %w", err)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, errors.New("--secure: the workers' connection is not TLS")
	}
	s := &Security{
		TLSVersion: tls.VersionName(info.State.Version), Principal: who.GetPrincipal(),
		RateLimitPerSecond: secureRateLimit,
	}
	for _, b := range who.GetBindings() {
		s.Roles = append(s.Roles, fmt.Sprintf("%s in %s", strings.TrimPrefix(strings.ToLower(b.GetRole().String()), "role_"), b.GetNamespacePattern()))
	}
	return s, nil
}

// withDatabase returns databaseURL (a URL or a keyword/value DSN) naming
// database instead, without a search_path: the new database has only its
// public schema.
func withDatabase(databaseURL, database string) (string, error) {
	if !strings.HasPrefix(databaseURL, "postgres://") && !strings.HasPrefix(databaseURL, "postgresql://") {
		return databaseURL + " dbname=" + database, nil // the last setting of a DSN wins
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "", errors.New("--database-url is not a valid PostgreSQL URL or DSN")
	}
	u.Path = "/" + database
	query := u.Query()
	query.Del("search_path")
	u.RawQuery = query.Encode()
	return u.String(), nil
}

// dropDatabase drops the secure side's database at the end of the run,
// once its ledgerd have stopped.
func (r *runner) dropDatabase(databaseURL, database string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err == nil {
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{database}.Sanitize()+" WITH (FORCE)")
		_ = conn.Close(ctx)
	}
	if err != nil {
		fmt.Fprintf(r.stderr, "ledgerbench: drop the secure side's database %s: %v\n", database, err)
	}
}
