package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/internal/tlstest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainVariable) == "1" {
		main() // a ledgerd process, started by a test (see startProcess)
		return
	}
	pgtest.Main(m)
}

// env is an environment that holds vars only.
func env(vars map[string]string) environment { return mapEnvironment(vars) }

// mapEnvironment is an environment of the variables in a map.
type mapEnvironment map[string]string

func (m mapEnvironment) Getenv(name string) string { return m[name] }

func (m mapEnvironment) Names() []string { return slices.Collect(maps.Keys(m)) }

// daemon is a ledgerd started by run, as main starts it.
type daemon struct {
	grpcAddr, httpAddr string
	stdout, stderr     *ledgertest.LogBuffer
	signal             func()          // tells it to stop, as a first SIGTERM does: run's context ends
	signalAgain        func()          // tells it to stop again, as a second SIGTERM does
	done               <-chan struct{} // closed when run has returned
	stop               func() error    // signals, waits for run, and returns its error
}

// startDaemon runs `ledgerd serve` on ports of its own, configured from
// the environment vars, and waits for it to serve.
func startDaemon(t *testing.T, vars map[string]string) daemon {
	t.Helper()
	return launchDaemon(t, vars, "ledgerd serving")
}

// launchDaemon runs `ledgerd serve` as startDaemon does, and waits for the
// log line msg, "ledgerd serving" or "ledgerd listening" (its ports are
// bound, the start-up may still be under way).
func launchDaemon(t *testing.T, vars map[string]string, msg string) daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	again := make(chan struct{})
	d := daemon{stdout: &ledgertest.LogBuffer{}, stderr: &ledgertest.LogBuffer{}, signal: cancel, signalAgain: sync.OnceFunc(func() { close(again) })}
	environment := map[string]string{
		"LEDGER_LISTEN_ADDR": "127.0.0.1:0",
		"LEDGER_HTTP_ADDR":   "127.0.0.1:0",
		"LEDGER_LOG_FORMAT":  "json",
		// Authentication has its own test (TestServeWithAuthentication).
		"LEDGER_INSECURE_DEV": "true",
	}
	maps.Copy(environment, vars)
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = run(withStopAgain(ctx, again), []string{"serve"}, env(environment), d.stdout, d.stderr)
	}()
	d.done = done
	d.stop = func() error {
		cancel()
		<-done
		return runErr
	}
	t.Cleanup(func() {
		d.signal()
		d.signalAgain() // a failed test may leave it in a lame-duck delay
		<-done
	})

	logged := regexp.MustCompile(`"msg":"` + msg + `".*"addr":"([^"]+)","http_addr":"([^"]+)"`)
	require.Eventually(t, func() bool {
		m := logged.FindStringSubmatch(d.stdout.String())
		if m != nil {
			d.grpcAddr, d.httpAddr = m[1], m[2]
		}
		return m != nil
	}, time.Minute, 20*time.Millisecond, "%s log line; stdout: %s; stderr: %s", msg, d.stdout, d.stderr)
	return d
}

// post calls an RPC over HTTP/JSON, as curl would.
func (d daemon) post(t *testing.T, rpc, body string) (int, map[string]any) {
	t.Helper()
	res, err := http.Post("http://"+d.httpAddr+"/ledger.v1.LedgerService/"+rpc, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer res.Body.Close()
	var answer map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
	return res.StatusCode, answer
}

func (d daemon) get(t *testing.T, path string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + d.httpAddr + path)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}

// TestServe runs the daemon as main does, from the environment: it
// migrates, serves a round trip over gRPC and one over HTTP/JSON, metrics
// and probes, and stops cleanly on cancellation.
func TestServe(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	ctx := context.Background()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": url})

	conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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

	// The same over HTTP/JSON.
	code, answer := d.post(t, "Reserve", `{"namespace": "ns", "key": "h", "owner": "w", "leaseTtl": "60s"}`)
	require.Equal(t, http.StatusOK, code, "%v", answer)
	require.Equal(t, "1", answer["acquired"].(map[string]any)["fencingToken"])
	code, answer = d.post(t, "Complete", `{"namespace": "ns", "key": "h", "fencingToken": "1", "result": "aGk="}`)
	require.Equal(t, http.StatusOK, code, "%v", answer)
	code, answer = d.post(t, "Lookup", `{"namespace": "ns", "key": "h"}`)
	require.Equal(t, http.StatusOK, code, "%v", answer)
	require.Equal(t, "STATE_COMPLETED", answer["entry"].(map[string]any)["state"])
	require.Equal(t, "aGk=", answer["entry"].(map[string]any)["result"])
	code, answer = d.post(t, "Complete", `{"namespace": "ns", "key": "h", "fencingToken": "2"}`)
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, "LEASE_LOST", answer["details"].([]any)[0].(map[string]any)["reason"])

	code, body := d.get(t, "/healthz")
	require.Equal(t, http.StatusOK, code, body)
	code, body = d.get(t, "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	code, metrics := d.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, metrics, `ledgerd_reserve_outcomes_total{namespace="ns",outcome="acquired"} 2`+"\n")
	require.Contains(t, metrics, `ledgerd_stale_token_refusals_total{method="Complete",namespace="ns"} 1`+"\n")
	require.Contains(t, metrics, `ledgerd_db_pool_max_conns 16`+"\n")
	require.Contains(t, metrics, `grpc_server_handled_total{grpc_code="OK",grpc_method="Complete",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 2`+"\n")

	// One JSON log line per RPC, with what it did.
	require.Regexp(t, `"msg":"finished call","namespace":"ns","key":"h","outcome":"acquired",.*"grpc.method":"Reserve",.*"grpc.code":"OK"`, d.stdout.String())

	require.NoError(t, d.stop())
	require.Contains(t, d.stdout.String(), `"msg":"stopped"`)

	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	defer pool.Close()
	var state string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT state FROM entries WHERE namespace = 'ns' AND key = 'k'`).Scan(&state))
	require.Equal(t, "completed", state)
}

// TestShutdownAnswersHTTPWaiters: a Reserve waiting over HTTP when the
// daemon is told to stop is answered (IN_PROGRESS) at once rather than cut
// off: the servers drain before the HTTP port closes, and the gRPC server
// still serves the gateway while the HTTP port finishes its requests.
func TestShutdownAnswersHTTPWaiters(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_REQUEST_TIMEOUT": "55s"})
	code, answer := d.post(t, "Reserve", `{"namespace": "ns", "key": "k", "owner": "holder", "leaseTtl": "3600s"}`)
	require.Equal(t, http.StatusOK, code, "%v", answer)

	type result struct {
		code   int
		answer map[string]any
		err    error
	}
	waited := make(chan result, 1)
	go func() {
		res, err := http.Post("http://"+d.httpAddr+"/ledger.v1.LedgerService/Reserve", "application/json",
			strings.NewReader(`{"namespace": "ns", "key": "k", "owner": "waiter", "waitTimeout": "50s"}`))
		if err != nil {
			waited <- result{err: err}
			return
		}
		defer res.Body.Close()
		var answer map[string]any
		err = json.NewDecoder(res.Body).Decode(&answer)
		waited <- result{code: res.StatusCode, answer: answer, err: err}
	}()
	require.Eventually(t, func() bool {
		_, metrics := d.get(t, "/metrics")
		return strings.Contains(metrics, "ledgerd_reserve_waiters 1\n")
	}, 10*time.Second, 10*time.Millisecond)

	start := time.Now()
	require.NoError(t, d.stop())
	require.Less(t, time.Since(start), 5*time.Second, "the waiter did not hold the shutdown up")
	w := <-waited
	require.NoError(t, w.err)
	require.Equal(t, http.StatusOK, w.code, "%v", w.answer)
	require.Equal(t, "holder", w.answer["inProgress"].(map[string]any)["owner"])
	require.Contains(t, d.stdout.String(), `"msg":"stopped"`)
}

func TestServeWithoutHTTP(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_HTTP_ADDR": "off"})
	require.Equal(t, "off", d.httpAddr)
	require.NoError(t, d.stop())
}

func TestServeRefusesATakenHTTPPort(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	var stdout, stderr ledgertest.LogBuffer
	err = run(context.Background(), []string{"serve", "--listen-addr", "127.0.0.1:0", "--http-addr", taken.Addr().String(),
		"--database-url", pgtest.Schema(t)}, env(nil), &stdout, &stderr)
	require.ErrorContains(t, err, "listen HTTP")
}

// TestMigrateCommandAndNoMigrate: `ledgerd migrate` applies the pending
// migrations, once; `ledgerd serve --no-migrate` over a database with
// pending migrations does not serve (NOT_SERVING, and it says why at ERROR
// level) until they have been applied by `ledgerd migrate`, as a
// deployment's migration job would while the replicas start.
func TestMigrateCommandAndNoMigrate(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	ctx := context.Background()
	var stdout, stderr ledgertest.LogBuffer

	d := launchDaemon(t, map[string]string{"LEDGER_DATABASE_URL": url, "LEDGER_NO_MIGRATE": "true"}, "ledgerd listening")
	require.Eventually(t, func() bool {
		return strings.Contains(d.stdout.String(), `"level":"ERROR","msg":"start-up failed: not serving yet, retrying"`)
	}, time.Minute, 20*time.Millisecond, d.stdout.String())
	require.Contains(t, d.stdout.String(), "database schema has pending migrations: --no-migrate is set, so run 'ledgerd migrate'")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, d.health(t))

	require.NoError(t, run(ctx, []string{"migrate", "--database-url", url}, env(nil), &stdout, &stderr))
	require.Contains(t, stdout.String(), "migrations applied")
	// Not a terminal: the log is JSON (--log-format auto).
	require.Regexp(t, `"msg":"migrations applied","count":[1-9]`, stdout.String())
	require.NoError(t, run(ctx, []string{"migrate", "--database-url", url}, env(nil), &stdout, &stderr))
	require.Contains(t, stdout.String(), `"count":0`)

	d.awaitHealth(t, healthpb.HealthCheckResponse_SERVING)
	require.Contains(t, d.stdout.String(), `"msg":"ledgerd serving"`)
	require.NotContains(t, d.stdout.String(), `"msg":"migrations applied"`, "--no-migrate applies none")
	require.NoError(t, d.stop())
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
		{[]string{"serve", "--database-url", "postgres://x/y", "--log-format", "xml"}, nil, "--log-format must be auto, text or json"},
		{[]string{"serve", "--database-url", "postgres://x/y", "extra"}, nil, "unexpected arguments"},
		{[]string{"serve", "--database-url", "postgres://x/y", "--default-lease-ttl", "2h"}, nil, "MaxLeaseTTL 1h0m0s is below DefaultLeaseTTL 2h0m0s"},
		{[]string{"frobnicate"}, nil, "usage"},
	}
	for _, tc := range cases {
		var stdout, stderr ledgertest.LogBuffer
		err := run(ctx, tc.args, env(tc.env), &stdout, &stderr)
		require.Error(t, err, "%v", tc.args)
		require.Contains(t, err.Error()+stderr.String(), tc.want, "%v", tc.args)
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	t.Parallel()
	var stderr ledgertest.LogBuffer
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
	var stdout, stderr ledgertest.LogBuffer
	err := run(context.Background(), []string{"serve", "--help"}, env(nil), &stdout, &stderr)
	require.ErrorIs(t, err, flag.ErrHelp)
	help := stderr.String()
	for _, name := range []string{"database-url", "listen-addr", "http-addr", "db-max-conns", "max-result-bytes", "default-lease-ttl", "shutdown-timeout", "lame-duck-delay", "health-check-interval", "health-check-timeout", "sweep-interval", "log-format", "console"} {
		require.Contains(t, help, "--"+name+" ("+envName(name)+")")
	}
	require.True(t, strings.HasPrefix(help, "Usage: ledgerd serve"))
}

// parseServe parses the configuration of `ledgerd serve` with a database
// URL, args and the environment vars.
func parseServe(args []string, vars map[string]string) (config, error) {
	var stderr ledgertest.LogBuffer
	return parseConfig("serve", append([]string{"--database-url", "postgres://x/y"}, args...), env(vars), &stderr)
}

func TestHTTPAddrLogFormatAndSweepDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := parseServe(nil, nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7071", cfg.HTTPAddr)
	require.Equal(t, "auto", cfg.LogFormat)
	require.Equal(t, time.Minute, cfg.SweepInterval)

	cfg, err = parseServe([]string{"--http-addr="}, nil)
	require.NoError(t, err)
	require.Empty(t, cfg.HTTPAddr, "empty disables HTTP")
	cfg, err = parseServe(nil, map[string]string{"LEDGER_HTTP_ADDR": "off"})
	require.NoError(t, err)
	require.Empty(t, cfg.HTTPAddr, `"off" disables HTTP from the environment`)
	cfg, err = parseServe(nil, map[string]string{"LEDGER_HTTP_ADDR": ":9090", "LEDGER_SWEEP_INTERVAL": "0s"})
	require.NoError(t, err)
	require.Equal(t, ":9090", cfg.HTTPAddr)
	require.Zero(t, cfg.SweepInterval, "0 disables the sweeper")

	_, err = parseServe([]string{"--sweep-interval", "-1s"}, nil)
	require.ErrorContains(t, err, "--sweep-interval must not be negative")
	_, err = parseServe([]string{"--max-waiting-reserves-per-principal", "-1"}, nil)
	require.ErrorContains(t, err, "--max-waiting-reserves-per-principal must not be negative (0: no cap), got -1")
	cfg, err = parseServe(nil, nil)
	require.NoError(t, err)
	require.Equal(t, 1000, cfg.MaxWaitingReservesPerPrincipal)
}

func TestLogFormatAuto(t *testing.T) {
	t.Parallel()
	// A file is not a terminal: JSON, for a log collector.
	file, err := os.CreateTemp(t.TempDir(), "log")
	require.NoError(t, err)
	defer file.Close()
	config{LogFormat: "auto"}.logger(file).Info("hello")
	config{LogFormat: "text"}.logger(file).Info("hello")
	written, err := os.ReadFile(file.Name())
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(written)), "\n")
	require.Len(t, lines, 2)
	require.True(t, json.Valid([]byte(lines[0])), lines[0])
	require.Contains(t, lines[1], "msg=hello")
}

func TestOperationsFlags(t *testing.T) {
	t.Parallel()
	var stderr ledgertest.LogBuffer
	cfg, err := parseConfig("serve", []string{"--database-url", "postgres://x/y", "--heartbeat-event-interval", "0",
		"--max-attempts", "4", "--event-retention", "72h", "--retention", "72h", "--min-event-retention", "72h", "--max-result-bytes-ceiling", "33554432",
		"--max-held-leases", "500", "--max-stored-bytes", "1073741824",
		"--max-waiting-reserves-per-principal", "0"}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, 0, cfg.MaxWaitingReservesPerPrincipal, "0: no cap")
	require.Equal(t, int64(500), cfg.Ledger.NamespaceDefaults.MaxHeldLeases)
	require.Equal(t, int64(1<<30), cfg.Ledger.NamespaceDefaults.MaxStoredBytes)
	require.Equal(t, time.Nanosecond, cfg.Ledger.HeartbeatEventInterval, "0 records every heartbeat")
	require.Equal(t, 4, cfg.Ledger.NamespaceDefaults.MaxAttempts)
	require.Equal(t, 72*time.Hour, cfg.Ledger.NamespaceDefaults.EventRetention)
	require.Equal(t, 33<<20, cfg.maxMessageBytes(), "the gRPC limit follows the result ceiling")

	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y"}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, time.Minute, cfg.Ledger.HeartbeatEventInterval)
	_, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--max-result-bytes", "20000000"}, env(nil), &stderr)
	require.ErrorContains(t, err, "above the server's ceiling")
	_, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--max-held-leases", "-1"}, env(nil), &stderr)
	require.ErrorContains(t, err, "MaxHeldLeases must not be negative")

	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--no-coalesce", "--coalesce-max-in-flight", "3",
		"--coalesce-max-wait", "200us", "--pprof-addr", "127.0.0.1:6060"}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, ledger.CoalesceConfig{Disabled: true, MaxBatch: 500, MaxInFlight: 3, MaxWait: 200 * time.Microsecond}, cfg.Ledger.Coalesce)
	require.Equal(t, "127.0.0.1:6060", cfg.PprofAddr)
	require.Equal(t, 4, cfg.Ledger.MaxConcurrentBatches)
	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--max-concurrent-batches", "8"}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, 8, cfg.Ledger.MaxConcurrentBatches)
	_, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--max-concurrent-batches", "-1"}, env(nil), &stderr)
	require.ErrorContains(t, err, "MaxConcurrentBatches must not be negative (0: the default, 4), got -1")
	_, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--coalesce-max-batch", "2000"}, env(nil), &stderr)
	require.ErrorContains(t, err, "Coalesce.MaxBatch must be between 1 and MaxBatchItems 1000, got 2000")
	_, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--pprof-addr", "0.0.0.0:6060"}, env(nil), &stderr)
	require.ErrorContains(t, err, "--pprof-addr exposes the process's internals")
}

func TestIsolationInsecureDevIsLoopbackOnly(t *testing.T) {
	t.Parallel()
	var stderr ledgertest.LogBuffer
	for _, args := range [][]string{
		{"--insecure-dev", "--listen-addr", "0.0.0.0:7070"},
		{"--insecure-dev", "--listen-addr", ":7070"},
		{"--insecure-dev", "--http-addr", "10.1.2.3:7071"},
	} {
		_, err := parseConfig("serve", append([]string{"--database-url", "postgres://x/y"}, args...), env(nil), &stderr)
		require.ErrorContains(t, err, "must be a loopback address", "%v", args)
	}
	for _, addr := range []string{"127.0.0.1:7070", "[::1]:7070", "localhost:7070"} {
		_, err := parseConfig("serve", []string{"--database-url", "postgres://x/y", "--insecure-dev", "--listen-addr", addr}, env(nil), &stderr)
		require.NoError(t, err, addr)
	}
	// An empty address listens on every interface: refused, with or
	// without authentication.
	for _, args := range [][]string{{"--insecure-dev", "--listen-addr="}, {"--listen-addr="}} {
		_, err := parseConfig("serve", append([]string{"--database-url", "postgres://x/y"}, args...), env(nil), &stderr)
		require.ErrorContains(t, err, "--listen-addr must not be empty", "%v", args)
	}
	// The address bound is checked too, whatever the name resolved to.
	require.NoError(t, boundToLoopback("--listen-addr", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7070}))
	require.NoError(t, boundToLoopback("--listen-addr", &net.TCPAddr{IP: net.IPv6loopback, Port: 7070}))
	for _, addr := range []net.Addr{&net.TCPAddr{IP: net.IPv4zero, Port: 7070}, &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 7070}} {
		require.ErrorContains(t, boundToLoopback("--http-addr", addr), "--http-addr bound "+addr.String()+", which is not a loopback address")
	}
}

// TestServeWithAuthentication bootstraps the first admin, then serves with
// authentication on: calls without a token are refused, with one they are
// made as its principal, on both ports; probes and metrics stay open.
func TestServeWithAuthentication(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	var out, errOut ledgertest.LogBuffer
	err := run(context.Background(), []string{"bootstrap", "--principal", "root", "--database-url", url, "--log-format", "json"}, env(nil), &out, &errOut)
	require.NoError(t, err, errOut.String())
	token := regexp.MustCompile(`ldg_[0-9a-f]+_[A-Za-z0-9_-]+`).FindString(out.String())
	require.NotEmpty(t, token, out.String())

	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": url, "LEDGER_INSECURE_DEV": "false"})
	defer func() { require.NoError(t, d.stop()) }()
	conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	admin := ledgerv1.NewLedgerAdminServiceClient(conn)
	_, err = admin.WhoAmI(context.Background(), &ledgerv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	who, err := admin.WhoAmI(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token), &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "root", who.GetPrincipal())

	post := func(path, body, bearer string) int {
		req, err := http.NewRequest(http.MethodPost, "http://"+d.httpAddr+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, http.StatusUnauthorized, post("/ledger.v1.LedgerAdminService/WhoAmI", `{}`, ""))
	require.Equal(t, http.StatusOK, post("/ledger.v1.LedgerAdminService/WhoAmI", `{}`, token))
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		res, err := http.Get("http://" + d.httpAddr + path)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode, path)
	}
	require.NotContains(t, d.stdout.String(), "INSECURE DEVELOPMENT MODE")
}

func TestRateLimitFlags(t *testing.T) {
	t.Parallel()
	var stderr ledgertest.LogBuffer
	cfg, err := parseConfig("serve", []string{"--database-url", "postgres://x/y"}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, server.Rate{PerSecond: 2000, Burst: 4000}, cfg.RateLimits.PerPrincipal, "on by default in production")
	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--insecure-dev"}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, server.RateLimits{}, cfg.RateLimits, "off in development unless asked for")
	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--insecure-dev"},
		env(map[string]string{"LEDGER_RATE_LIMIT_NAMESPACE": "10"}), &stderr)
	require.NoError(t, err)
	require.Equal(t, float64(10), cfg.RateLimits.PerNamespace.PerSecond, "asked for through the environment")
	_, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--rate-limit-principal", "-1"}, env(nil), &stderr)
	require.ErrorContains(t, err, "--rate-limit-principal")
}

// TestServeWithTLS serves both ports over TLS, requiring client
// certificates: a certificate authenticates as cert:<CN> over gRPC and
// HTTPS (where a caller cannot claim another certificate's principal in a
// header), a bearer token wins over it, and a caller without one fails the
// handshake.
func TestServeWithTLS(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	ctx := context.Background()
	var out, errOut ledgertest.LogBuffer
	require.NoError(t, run(ctx, []string{"bootstrap", "--principal", "root", "--database-url", url}, env(nil), &out, &errOut), errOut.String())
	token := regexp.MustCompile(`ldg_[0-9a-f]+_[A-Za-z0-9_-]+`).FindString(out.String())
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	store, err := ledger.New(pool, ledger.Config{})
	require.NoError(t, err)
	_, err = store.GrantRole(ctx, ledger.RoleBinding{Principal: "cert:alice", NamespacePattern: "ns", Role: ledger.RoleWorker}, "test")
	require.NoError(t, err)
	_, err = store.CreateNamespace(ctx, "ns", ledger.NamespaceUpdate{}, "test") // not created on first use
	require.NoError(t, err)

	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "ledgerd").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "clients.pem")
	tlstest.WriteFile(t, caFile, ca.PEM)
	d := startDaemon(t, map[string]string{
		"LEDGER_DATABASE_URL": url, "LEDGER_INSECURE_DEV": "false",
		"LEDGER_TLS_CERT_FILE": certFile, "LEDGER_TLS_KEY_FILE": keyFile, "LEDGER_TLS_CLIENT_CA_FILE": caFile,
	})
	defer func() { require.NoError(t, d.stop()) }()
	require.Contains(t, d.stdout.String(), `"tls":true`)
	alice, mallory := ca.Issue(t, "alice").TLSCertificate(t), ca.Issue(t, "mallory").TLSCertificate(t)

	dial := func(certs ...tls.Certificate) ledgerv1.LedgerAdminServiceClient {
		conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: certs})))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return ledgerv1.NewLedgerAdminServiceClient(conn)
	}
	who, err := dial(alice).WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "cert:alice", who.GetPrincipal())
	_, err = dial().WhoAmI(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &ledgerv1.WhoAmIRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "no client certificate: no handshake")

	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ca.Pool(), Certificates: certs},
			ForceAttemptHTTP2: true,
		}}
	}
	whoAmI := func(c *http.Client, header http.Header) string {
		req, err := http.NewRequest(http.MethodPost, "https://"+d.httpAddr+"/ledger.v1.LedgerAdminService/WhoAmI", strings.NewReader(`{}`))
		require.NoError(t, err)
		maps.Copy(req.Header, header)
		req.Header.Set("Content-Type", "application/json")
		res, err := c.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, "HTTP/2.0", res.Proto)
		var answer map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
		require.Equal(t, http.StatusOK, res.StatusCode, "%v", answer)
		return answer["principal"].(string)
	}
	require.Equal(t, "cert:alice", whoAmI(client(alice), nil))
	require.Equal(t, "root", whoAmI(client(alice), http.Header{"Authorization": {"Bearer " + token}}), "the token wins")
	require.Equal(t, "cert:mallory", whoAmI(client(mallory), http.Header{
		"Grpc-Metadata-Ledgerd-Client-Certificate-Principal": {"cert:alice"},
		"Ledgerd-Client-Certificate-Principal":               {"cert:alice"},
	}), "the certificate's principal cannot be claimed in a header")
	res, err := client(alice).Post("https://"+d.httpAddr+"/ledger.v1.LedgerService/Reserve", "application/json",
		strings.NewReader(`{"namespace": "ns", "key": "k", "owner": "w"}`))
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)

	res, err = client().Get("https://" + d.httpAddr + "/healthz")
	if err == nil {
		_ = res.Body.Close()
	}
	require.Error(t, err, "no client certificate: no handshake")
	res, err = client(alice).Get("https://" + d.httpAddr + "/readyz")
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
}

func TestTLSFlags(t *testing.T) {
	t.Parallel()
	parse := func(args ...string) (config, error) {
		var stderr ledgertest.LogBuffer
		return parseConfig("serve", append([]string{"--database-url", "postgres://x/y"}, args...), env(nil), &stderr)
	}
	cfg, err := parse()
	require.NoError(t, err)
	require.Nil(t, cfg.TLS)
	cfg, err = parse("--tls-cert-file", "c.pem", "--tls-key-file", "k.pem")
	require.NoError(t, err)
	require.Equal(t, &server.TLSConfig{CertFile: "c.pem", KeyFile: "k.pem", ClientAuth: tls.NoClientCert, ClientPrincipal: server.PrincipalCommonName}, cfg.TLS)
	cfg, err = parse("--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem")
	require.NoError(t, err)
	require.Equal(t, tls.RequireAndVerifyClientCert, cfg.TLS.ClientAuth, "required by default with a client CA")
	cfg, err = parse("--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem", "--tls-client-auth", "request")
	require.NoError(t, err)
	require.Equal(t, tls.VerifyClientCertIfGiven, cfg.TLS.ClientAuth)
	pin := "sha256:" + strings.Repeat("ab", 32)
	cfg, err = parse("--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem",
		"--tls-client-principal", "spiffe", "--tls-client-issuer-spki", pin+", sha256:"+strings.Repeat("CD", 32))
	require.NoError(t, err)
	require.Equal(t, server.PrincipalSPIFFEID, cfg.TLS.ClientPrincipal)
	require.Len(t, cfg.TLS.ClientIssuerSPKIs, 2)
	require.Equal(t, byte(0xab), cfg.TLS.ClientIssuerSPKIs[0][0])
	require.Equal(t, byte(0xcd), cfg.TLS.ClientIssuerSPKIs[1][31])
	for _, bad := range [][]string{
		{"--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem", "--tls-client-principal", "uri"},
		{"--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem", "--tls-client-issuer-spki", "sha256:abcd"},
		{"--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem", "--tls-client-issuer-spki", strings.Repeat("ab", 32)},
		{"--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-issuer-spki", pin},
		{"--tls-client-issuer-spki", pin},
		{"--tls-cert-file", "c.pem"},
		{"--tls-key-file", "k.pem"},
		{"--tls-client-ca-file", "ca.pem"},
		{"--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-auth", "require"},
		{"--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem", "--tls-client-auth", "none"},
		{"--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--tls-client-ca-file", "ca.pem", "--tls-client-auth", "maybe"},
	} {
		_, err := parse(bad...)
		require.ErrorContains(t, err, "--tls-", "%v", bad)
	}
}
