package main

import (
	"bytes"
	"context"
	"flag"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// syncBuffer is a bytes.Buffer safe for the server's and the test's
// goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

// TestServe runs the daemon as main does, from the environment: it
// migrates, serves a round trip, and stops cleanly on cancellation.
func TestServe(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, env(map[string]string{
			"LEDGER_DATABASE_URL": url,
			"LEDGER_LISTEN_ADDR":  "127.0.0.1:0",
			"LEDGER_LOG_FORMAT":   "json",
		}), &stdout, &stderr)
	}()

	addrPattern := regexp.MustCompile(`"addr":"(127\.0\.0\.1:\d+)"`)
	var addr string
	require.Eventually(t, func() bool {
		m := addrPattern.FindStringSubmatch(stdout.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, 30*time.Second, 20*time.Millisecond, "serving log line; stderr: %s", &stderr)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, health.GetStatus())

	client := ledgerv1.NewLedgerServiceClient(conn)
	res, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	_, err = client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: res.GetAcquired().GetFencingToken(), Result: []byte("r")})
	require.NoError(t, err)

	stop()
	require.NoError(t, <-done)
	require.Contains(t, stdout.String(), `"msg":"stopped"`)

	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	defer pool.Close()
	var state string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT state FROM entries WHERE namespace = 'ns' AND key = 'k'`).Scan(&state))
	require.Equal(t, "completed", state)
}

func TestMigrateCommandAndNoMigrate(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	ctx := context.Background()
	var stdout, stderr syncBuffer

	// --no-migrate refuses to serve a database with pending migrations.
	err := run(ctx, []string{"serve", "--no-migrate", "--listen-addr", "127.0.0.1:0", "--database-url", url}, env(nil), &stdout, &stderr)
	require.ErrorIs(t, err, ledger.ErrSchemaBehind)

	require.NoError(t, run(ctx, []string{"migrate", "--database-url", url}, env(nil), &stdout, &stderr))
	require.Contains(t, stdout.String(), "migrations applied")
	require.Regexp(t, `migrations applied" count=[1-9]`, stdout.String())
	require.NoError(t, run(ctx, []string{"migrate", "--database-url", url}, env(nil), &stdout, &stderr))
	require.Contains(t, stdout.String(), "count=0")
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"serve"}, nil, "--database-url (or LEDGER_DATABASE_URL) is required"},
		{[]string{"serve", "--database-url", "postgres://x/y", "--db-max-conns", "0"}, nil, "--db-max-conns must be between 1 and 1000, got 0"},
		{[]string{"serve"}, map[string]string{"LEDGER_DATABASE_URL": "postgres://x/y", "LEDGER_DEFAULT_LEASE_TTL": "soon"}, "LEDGER_DEFAULT_LEASE_TTL"},
		{[]string{"serve", "--database-url", "postgres://x/y", "--log-format", "xml"}, nil, "--log-format must be text or json"},
		{[]string{"serve", "--database-url", "postgres://x/y", "extra"}, nil, "unexpected arguments"},
		{[]string{"serve", "--database-url", "postgres://x/y", "--default-lease-ttl", "2h"}, nil, "MaxLeaseTTL 1h0m0s is below DefaultLeaseTTL 2h0m0s"},
		{[]string{"frobnicate"}, nil, "usage"},
	}
	for _, tc := range cases {
		var stdout, stderr syncBuffer
		err := run(ctx, tc.args, env(tc.env), &stdout, &stderr)
		require.Error(t, err, "%v", tc.args)
		require.Contains(t, err.Error()+stderr.String(), tc.want, "%v", tc.args)
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	t.Parallel()
	var stderr syncBuffer
	cfg, err := parseConfig("serve", []string{"--max-key-bytes", "100"}, env(map[string]string{
		"LEDGER_DATABASE_URL":  "postgres://from-env/db",
		"LEDGER_MAX_KEY_BYTES": "200",
		"LEDGER_RETENTION":     "48h",
	}), &stderr)
	require.NoError(t, err)
	require.Equal(t, "postgres://from-env/db", cfg.DatabaseURL)
	require.Equal(t, 100, cfg.Ledger.Limits.MaxKeyBytes, "a flag beats its environment variable")
	require.Equal(t, 48*time.Hour, cfg.Ledger.NamespaceDefaults.Retention)
}

func TestHelpListsEveryFlagWithItsVariable(t *testing.T) {
	t.Parallel()
	var stdout, stderr syncBuffer
	err := run(context.Background(), []string{"serve", "--help"}, env(nil), &stdout, &stderr)
	require.ErrorIs(t, err, flag.ErrHelp)
	help := stderr.String()
	for _, name := range []string{"database-url", "listen-addr", "db-max-conns", "max-result-bytes", "default-lease-ttl", "shutdown-timeout"} {
		require.Contains(t, help, "--"+name+" ("+envName(name)+")")
	}
	require.True(t, strings.HasPrefix(help, "Usage: ledgerd serve"))
}
