package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// patience bounds every wait for a condition: generous, so that a busy
// machine cannot break a test.
const patience = time.Minute

// runMainVariable, set to 1, makes the test binary run main instead of the
// tests: a ledgerd process, as startProcess starts it.
const runMainVariable = "LEDGERD_TEST_RUN_MAIN"

// dial returns a gRPC connection to addr, closed in the test's cleanup.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// healthOf returns what the gRPC health service at addr says of the server
// as a whole.
func healthOf(t *testing.T, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	res, err := healthpb.NewHealthClient(dial(t, addr)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	return res.GetStatus()
}

// awaitHealthOf waits until the gRPC health service at addr says want.
func awaitHealthOf(t *testing.T, addr string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	health := healthpb.NewHealthClient(dial(t, addr))
	require.Eventually(t, func() bool {
		res, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && res.GetStatus() == want
	}, patience, 20*time.Millisecond, "health %s", want)
}

func (d daemon) health(t *testing.T) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	return healthOf(t, d.grpcAddr)
}

func (d daemon) awaitHealth(t *testing.T, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	awaitHealthOf(t, d.grpcAddr, want)
}

// awaitLog waits until the daemon has logged something that matches re.
func (d daemon) awaitLog(t *testing.T, re string) {
	t.Helper()
	pattern := regexp.MustCompile(re)
	require.Eventually(t, func() bool { return pattern.MatchString(d.stdout.String()) }, patience, 20*time.Millisecond,
		"log %s; stdout: %s", re, d.stdout)
}

// reserve claims key through the gRPC API.
func reserve(t *testing.T, addr, key string) (*ledgerv1.ReserveResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	return ledgerv1.NewLedgerServiceClient(dial(t, addr)).Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: key, Owner: "w"})
}

// requireReserved checks that a Reserve claimed its key.
func requireReserved(t *testing.T, res *ledgerv1.ReserveResponse, err error) {
	t.Helper()
	require.NoError(t, err)
	require.NotNil(t, res.GetAcquired(), "%v", res)
}

// TestServeWaitsForTheDatabase starts ledgerd while its PostgreSQL is
// down (a private cluster, stopped): it binds its ports and answers
// NOT_SERVING, the ledger's RPCs get UNAVAILABLE saying it is starting,
// and it retries, at WARN level; once PostgreSQL is started, it migrates
// the database and serves.
func TestServeWaitsForTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := pgtest.Private(t, devcluster.Throwaway)
	require.NoError(t, pg.Stop(ctx))

	d := launchDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pg.URL()}, "ledgerd listening")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, d.health(t))
	_, err := reserve(t, d.grpcAddr, "k")
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "ledgerd is starting")
	code, body := d.get(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.JSONEq(t, `{"status": "unavailable", "reason": "starting: waiting for the database"}`, body)
	d.awaitLog(t, `"level":"WARN","msg":"start-up failed: not serving yet, retrying","attempt":1,.*"error":"connect to database 127.0.0.1:`)
	require.NotContains(t, d.stdout.String(), `"msg":"ledgerd serving"`)

	require.NoError(t, pg.Start(context.Background()))
	d.awaitHealth(t, healthpb.HealthCheckResponse_SERVING)
	res, err := reserve(t, d.grpcAddr, "k")
	requireReserved(t, res, err)
	code, body = d.get(t, "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, d.stdout.String(), `"msg":"migrations applied"`)
	require.Contains(t, d.stdout.String(), `"msg":"ledgerd serving"`)
	require.NotContains(t, d.stdout.String(), `"level":"ERROR"`, "a database out of reach is no error")
	conn, err := pgx.Connect(ctx, pg.URL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var migrations int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM ledgerd_migrations WHERE version_id > 0").Scan(&migrations))
	require.Positive(t, migrations)
	require.NoError(t, d.stop())
}

// TestServeRetriesUntilTheRoleExists: a role the database does not know
// (SQLSTATE 28000, as bad credentials are) does not make ledgerd exit: it
// reports NOT_SERVING and says at ERROR level that an operator is needed,
// and serves once the operator has created the role.
func TestServeRetriesUntilTheRoleExists(t *testing.T) {
	t.Parallel()
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	role := "t_late_" + hex.EncodeToString(suffix[:])
	superuser := pgtest.URL(t)
	// Registered before the schema, so that it runs after the schema (and
	// the role's objects in it) is dropped.
	t.Cleanup(func() { execSQL(t, superuser, "DROP OWNED BY "+role+"; DROP ROLE IF EXISTS "+role) })
	schemaURL := pgtest.Schema(t)
	u, err := url.Parse(schemaURL)
	require.NoError(t, err)
	u.User = url.User(role)

	d := launchDaemon(t, map[string]string{"LEDGER_DATABASE_URL": u.String()}, "ledgerd listening")
	d.awaitLog(t, `"level":"ERROR","msg":"start-up failed: not serving yet, retrying",.*SQLSTATE 28000`)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, d.health(t))

	schema := u.Query().Get("search_path")
	execSQL(t, superuser, "CREATE ROLE "+role+" LOGIN; GRANT ALL ON SCHEMA "+schema+" TO "+role)
	d.awaitHealth(t, healthpb.HealthCheckResponse_SERVING)
	res, err := reserve(t, d.grpcAddr, "k")
	requireReserved(t, res, err)
	require.NoError(t, d.stop())
}

// TestLameDuck: told to stop with --lame-duck-delay, ledgerd reports
// NOT_SERVING at once (Watch, Check, /readyz) while it goes on serving
// calls on both ports; told to stop again, it cuts the delay short,
// drains and returns nil.
func TestLameDuck(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_LAME_DUCK_DELAY": "1h"})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	watch, err := healthpb.NewHealthClient(dial(t, d.grpcAddr)).Watch(ctx, &healthpb.HealthCheckRequest{Service: ledgerv1.LedgerService_ServiceDesc.ServiceName})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())

	d.signal()
	next, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.GetStatus(), "the watcher is told at once")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, d.health(t))
	code, body := d.get(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.JSONEq(t, `{"status": "unavailable", "reason": "shutting down"}`, body)
	res, err := reserve(t, d.grpcAddr, "grpc")
	requireReserved(t, res, err)
	code, answer := d.post(t, "Reserve", `{"namespace": "ns", "key": "http", "owner": "w"}`)
	require.Equal(t, http.StatusOK, code, "%v", answer)
	require.Contains(t, answer, "acquired")
	select {
	case <-d.done:
		t.Fatal("ledgerd stopped during its lame-duck delay")
	default:
	}

	d.signalAgain()
	select {
	case <-d.done:
	case <-time.After(patience):
		t.Fatal("ledgerd did not stop when told again")
	}
	require.NoError(t, d.stop())
	requireInOrder(t, d.stdout.String(), "lame duck: reporting NOT_SERVING", "told to stop again", "shutting down: draining", `"msg":"stopped"`)
}

// TestLameDuckDelayRunsOut: after its lame-duck delay, ledgerd drains and
// returns nil, without being told twice.
func TestLameDuckDelayRunsOut(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_LAME_DUCK_DELAY": "200ms"})
	require.NoError(t, d.stop())
	requireInOrder(t, d.stdout.String(), `"msg":"lame duck: reporting NOT_SERVING while still serving calls, so that load balancers stop routing here","delay":200000000`,
		"shutting down: draining", `"msg":"stopped"`)
	require.NotContains(t, d.stdout.String(), "told to stop again")
}

// TestSignals runs ledgerd as a process, as main runs it: the first
// SIGTERM begins the lame-duck delay (NOT_SERVING, calls still served), a
// second one cuts it short, and ledgerd exits 0 after draining.
func TestSignals(t *testing.T) {
	t.Parallel()
	p := startProcess(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_LAME_DUCK_DELAY": "1h"})
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	awaitHealthOf(t, p.grpcAddr, healthpb.HealthCheckResponse_NOT_SERVING)
	res, err := reserve(t, p.grpcAddr, "k")
	requireReserved(t, res, err)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		require.NoError(t, err, "exit status 0; stdout: %s", p.stdout)
	case <-time.After(patience):
		t.Fatalf("ledgerd did not exit on the second SIGTERM; stdout: %s", p.stdout)
	}
	requireInOrder(t, p.stdout.String(), "lame duck: reporting NOT_SERVING", "told to stop again", `"msg":"stopped"`)
}

// TestDatabaseErrorsThatFailAtOnce: a --database-url that is not one fails
// `ledgerd serve` at once (without quoting the password), and `ledgerd
// migrate` and `bootstrap` fail at once when the database cannot be
// reached: they do not wait for it as serve does.
func TestDatabaseErrorsThatFailAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var stdout, stderr ledgertest.LogBuffer
	err := run(ctx, []string{"serve", "--database-url", "postgres://u:secret@db:notaport/ledger", "--listen-addr", "127.0.0.1:0", "--http-addr", "off"},
		env(nil), &stdout, &stderr)
	require.ErrorContains(t, err, "--database-url is not a valid PostgreSQL URL or DSN")
	require.NotContains(t, err.Error()+stdout.String()+stderr.String(), "secret")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	unreachable := fmt.Sprintf("postgres://postgres@%s/ledger?sslmode=disable&connect_timeout=5", lis.Addr())
	require.NoError(t, lis.Close()) // nothing listens there now
	for _, args := range [][]string{{"migrate"}, {"bootstrap", "--principal", "root"}} {
		err := run(ctx, append(args, "--database-url", unreachable), env(nil), &stdout, &stderr)
		require.ErrorContains(t, err, "connect to database 127.0.0.1:", "%v", args)
	}
}

func TestHealthFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseServe(nil, nil)
	require.NoError(t, err)
	require.Zero(t, cfg.LameDuckDelay)
	require.Equal(t, time.Second, cfg.HealthCheckInterval)
	require.Equal(t, 2*time.Second, cfg.HealthCheckTimeout)

	cfg, err = parseServe([]string{"--health-check-timeout", "500ms"}, map[string]string{"LEDGER_LAME_DUCK_DELAY": "15s", "LEDGER_HEALTH_CHECK_INTERVAL": "5s"})
	require.NoError(t, err)
	require.Equal(t, 15*time.Second, cfg.LameDuckDelay)
	require.Equal(t, 5*time.Second, cfg.HealthCheckInterval)
	require.Equal(t, 500*time.Millisecond, cfg.HealthCheckTimeout)

	for _, bad := range [][]string{{"--lame-duck-delay", "-1s"}, {"--health-check-interval", "0s"}, {"--health-check-timeout", "-1s"}} {
		_, err := parseServe(bad, nil)
		require.ErrorContains(t, err, bad[0]+" must", "%v", bad)
	}
}

// requireInOrder checks that s contains each of parts, in that order.
func requireInOrder(t *testing.T, s string, parts ...string) {
	t.Helper()
	rest := s
	for _, part := range parts {
		i := strings.Index(rest, part)
		require.GreaterOrEqual(t, i, 0, "%q is missing after the parts before it in:\n%s", part, s)
		rest = rest[i+len(part):]
	}
}

// process is ledgerd run as a process of its own by startProcess.
type process struct {
	cmd      *exec.Cmd
	grpcAddr string
	stdout   *ledgertest.LogBuffer
	exited   <-chan error // cmd.Wait's error
}

// startProcess runs the test binary as `ledgerd serve` (see TestMain),
// configured as startDaemon configures run, and waits for it to serve. It
// is killed in the test's cleanup if it is still running.
func startProcess(t *testing.T, vars map[string]string) process {
	t.Helper()
	environment := map[string]string{
		runMainVariable:       "1",
		"LEDGER_LISTEN_ADDR":  "127.0.0.1:0",
		"LEDGER_HTTP_ADDR":    "127.0.0.1:0",
		"LEDGER_LOG_FORMAT":   "json",
		"LEDGER_INSECURE_DEV": "true",
	}
	maps.Copy(environment, vars)
	p := process{cmd: exec.Command(os.Args[0], "serve"), stdout: &ledgertest.LogBuffer{}}
	p.cmd.Env = os.Environ()
	for name, value := range environment {
		p.cmd.Env = append(p.cmd.Env, name+"="+value)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stdout
	require.NoError(t, p.cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	p.exited = exited
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })

	serving := regexp.MustCompile(`"msg":"ledgerd serving".*"addr":"([^"]+)"`)
	require.Eventually(t, func() bool {
		m := serving.FindStringSubmatch(p.stdout.String())
		if m != nil {
			p.grpcAddr = m[1]
		}
		return m != nil
	}, patience, 20*time.Millisecond, "serving log line; output: %s", p.stdout)
	return p
}
