package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/bench"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRunSmoke runs every workload on both sides for a moment against a
// ledgerd served in the test over its own schema, with a small prefill
// and purge: every operation must succeed and every figure be there.
func TestRunSmoke(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 10 * time.Millisecond}})
	addr := ledgertest.ServeTCP(t, b.Store, server.Config{})
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	report, err := bench.Run(context.Background(), bench.Config{
		Addr:        addr,
		Insecure:    true,
		DatabaseURL: b.Pool.Config().ConnString(),
		Workers:     []int{4},
		BatchSize:   100,
		Duration:    time.Second,
		Warmup:      -1,
		GRPCConns:   1,
		RawConns:    4,
		Prefill:     500,
		Purge:       300,
		JSONPath:    jsonPath,
	}, []string{"ledgerbench", "--test"}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())

	require.Len(t, report.Runs, 11) // the floor, then 5 workloads × 2 sides
	for _, run := range report.Runs {
		require.Zero(t, run.Errors, "%s %s: %v", run.Workload, run.Side, run.ErrorSamples)
		require.Positive(t, run.Ops, "%s %s", run.Workload, run.Side)
		require.Positive(t, run.Latency.P99Micros)
	}
	require.Len(t, report.Ratios, 5)
	for _, q := range report.Ratios {
		require.Positive(t, q.Ratio, q.Workload)
		require.NotNil(t, q.OverheadP50Us, "%s: the floor ran, so the overhead is there", q.Workload)
	}
	require.Equal(t, bench.FloorWorkload, report.Runs[0].Workload)
	contended := report.Runs[7]
	require.Equal(t, "contended", contended.Workload)
	require.Positive(t, contended.Outcomes["in_progress"]+contended.Outcomes["acquired"]+contended.Outcomes["takeover"])

	require.Equal(t, int64(500), report.Prefill.Entries)
	require.Equal(t, int64(500), report.Prefill.Inserted)
	var events int
	require.NoError(t, b.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM events WHERE key LIKE 'prefill-%'`).Scan(&events))
	require.Equal(t, 1000, events, "two events per prefilled entry")
	require.Equal(t, int64(300), report.Purge.Purged)

	require.Contains(t, stdout.String(), "ledgerd / raw")
	require.Contains(t, stderr.String(), "op/s", "progress lines")
	_, err = os.Stat(jsonPath)
	require.NoError(t, err)
}

// TestRunReplicas builds ledgerd, starts two processes of it over one
// database (a schema of the test's own), and runs a workload of two calls
// and one of one call through them: each process answers calls, their
// counters account for every call of the run, and the report records two
// replicas, in JSON and in its tables.
func TestRunReplicas(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	report, err := bench.Run(ctx, bench.Config{
		DatabaseURL: pgtest.Schema(t),
		Replicas:    2,
		DBMaxConns:  4,
		Workloads:   []string{"pair", "lookup"},
		Sides:       []string{bench.SideLedgerd},
		Workers:     []int{4},
		Keys:        100,
		Duration:    2 * time.Second,
		Warmup:      -1,
		GRPCConns:   1,
		RawConns:    2,
		JSONPath:    jsonPath,
	}, []string{"ledgerbench", "--replicas", "2"}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())

	require.Equal(t, 2, report.Settings.Replicas)
	require.Len(t, report.Runs, 2)
	for _, run := range report.Runs {
		require.Zero(t, run.Errors, "%s: %v", run.Workload, run.ErrorSamples)
		require.Equal(t, 2, run.Replicas)
		require.Len(t, run.ReplicaResults, 2)
		callsPerOp := map[string]int64{"pair": 2, "lookup": 1}[run.Workload]
		var calls int64
		var sessions int
		for i, one := range run.ReplicaResults {
			require.Equal(t, i+1, one.Replica)
			require.Positive(t, one.Calls, "%s: replica %d answered no call", run.Workload, one.Replica)
			require.Positive(t, one.PeakRSSBytes)
			require.Positive(t, one.PostgresBackends, "its pool and its LISTEN connection")
			require.LessOrEqual(t, one.PostgresBackends, 4+1, "at most --db-max-conns + 1")
			calls += one.Calls
			sessions += one.PostgresBackends
		}
		require.Equal(t, callsPerOp*run.Ops, calls, "%s: the replicas' counters account for every call", run.Workload)
		require.Equal(t, sessions, run.PostgresBackends)
		kind := map[string]string{"pair": "reserve", "lookup": "lookup"}[run.Workload]
		require.Equal(t, run.Ops, run.Coalesced[kind].Calls, "%s: every %s went through a coalescer", run.Workload, kind)
		require.Positive(t, run.Coalesced[kind].MeanGroup)
	}
	require.Regexp(t, `pair\s+ledgerd\s+2\s+4\s`, stdout.String(), "the runs table shows the replicas")
	require.Regexp(t, `lookup\s+4\s+all\s`, stdout.String(), "the processes' table sums them")

	data, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var decoded struct {
		Settings struct {
			Replicas int `json:"replicas"`
		} `json:"settings"`
	}
	require.NoError(t, json.Unmarshal(data, &decoded))
	require.Equal(t, 2, decoded.Settings.Replicas)
}

// TestRunSecureAndFloor builds ledgerd and runs the floor and two
// workloads on the development-mode side, the secure side and the raw
// side: the secure side's calls went over TLS with the workers' token (the
// server said who they were), every ledgerd side's ratio shows its floor
// and the overhead computed from the measured p50s, and the secure side is
// compared with the other in the same run. Its database is dropped at the
// end.
func TestRunSecureAndFloor(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	databaseURL := pgtest.Schema(t)
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	report, err := bench.Run(ctx, bench.Config{
		DatabaseURL: databaseURL,
		DBMaxConns:  4,
		Workloads:   []string{bench.FloorWorkload, "pair", "lookup"},
		Sides:       []string{bench.SideLedgerd, bench.SideSecure, bench.SideRaw},
		Workers:     []int{2},
		Keys:        100,
		Duration:    time.Second,
		Warmup:      -1,
		GRPCConns:   1,
		RawConns:    2,
		JSONPath:    jsonPath,
	}, []string{"ledgerbench", "--secure"}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())

	require.Len(t, report.Runs, 8, "floor on two sides, pair and lookup on three")
	for _, run := range report.Runs {
		require.Zero(t, run.Errors, "%s %s: %v", run.Workload, run.Side, run.ErrorSamples)
		require.Positive(t, run.Ops, "%s %s", run.Workload, run.Side)
	}
	sec := report.Security
	require.NotNil(t, sec)
	require.Equal(t, "ledgerbench-worker", sec.Principal, "the workers' calls carried the minted token")
	require.Equal(t, []string{"worker in ledgerbench"}, sec.Roles)
	require.Contains(t, sec.TLSVersion, "TLS 1.", "the workers' connection negotiated TLS")
	require.Equal(t, "none", sec.DatabaseTLS, "a --database-url without TLS is reached as its URL says")

	floors := map[string]int64{}
	for _, run := range report.Runs {
		if run.Workload == bench.FloorWorkload {
			floors[run.Side] = run.Latency.P50Micros
		}
	}
	require.Len(t, report.Ratios, 4)
	for _, q := range report.Ratios {
		require.NotNil(t, q.FloorP50Us, "%s %s", q.Workload, q.Side)
		require.Equal(t, floors[q.Side], *q.FloorP50Us)
		require.Equal(t, map[string]int{"pair": 2, "lookup": 1}[q.Workload], q.CallsPerOp)
		require.Equal(t, q.LedgerdP50Us-q.RawP50Us-int64(q.CallsPerOp)*floors[q.Side], *q.OverheadP50Us)
	}
	require.Len(t, report.SecureCosts, 3)
	for _, c := range report.SecureCosts {
		require.Positive(t, c.Ratio, c.Workload)
		require.Equal(t, c.SecureP50Us-c.InsecureP50Us, c.P50DiffUs)
	}
	require.Contains(t, stdout.String(), "floor p50")
	require.Contains(t, stdout.String(), "secure / ledgerd")

	// The secure side's database is gone with the run.
	pool := pgtest.Pool(t)
	var databases int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", sec.Database).Scan(&databases))
	require.Zero(t, databases)
}

// TestRunSecureOverTLSToPostgres: with the private cluster ledgerbench
// starts, the secure side reaches PostgreSQL over TLS, verifying it against
// the run's CA, while the other sides stay in plaintext.
func TestRunSecureOverTLSToPostgres(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	report, err := bench.Run(ctx, bench.Config{
		DBMaxConns: 2,
		Workloads:  []string{"lookup"},
		Sides:      []string{bench.SideLedgerd, bench.SideSecure, bench.SideRaw},
		Workers:    []int{1},
		Keys:       10,
		Duration:   500 * time.Millisecond,
		Warmup:     -1,
		GRPCConns:  1,
		RawConns:   1,
	}, []string{"ledgerbench", "--secure"}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())
	for _, run := range report.Runs {
		require.Zero(t, run.Errors, "%s %s: %v", run.Workload, run.Side, run.ErrorSamples)
		require.Positive(t, run.Ops, "%s %s", run.Workload, run.Side)
	}
	require.NotNil(t, report.Security)
	require.Regexp(t, `^TLSv1\.[23]$`, report.Security.DatabaseTLS, "the secure side's database connections")
	require.Contains(t, stdout.String(), "reached with TLS "+report.Security.DatabaseTLS)
}

// TestRunIdle builds ledgerd, holds Reserves waiting on it, and measures
// it at rest: the report has the process's CPU time and memory, and
// ledgerd's own count of the waiters, which nothing woke.
func TestRunIdle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	report, err := bench.Run(ctx, bench.Config{
		DatabaseURL: pgtest.Schema(t),
		DBMaxConns:  2,
		RawConns:    2,
		Sides:       []string{bench.SideLedgerd},
		Idle:        time.Second,
		IdleWaiters: 50,
	}, []string{"ledgerbench", "--idle", "1s"}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())

	require.Empty(t, report.Runs, "no workload runs")
	require.Len(t, report.Idle, 1)
	idle := report.Idle[0]
	require.Equal(t, bench.SideLedgerd, idle.Side)
	require.Len(t, idle.PIDs, 1)
	require.Positive(t, idle.PIDs[0])
	require.GreaterOrEqual(t, idle.Seconds, 1.0)
	require.Equal(t, 50, idle.Waiters)
	require.Equal(t, int64(50), idle.WaitingAtStart, "ledgerd counted every waiter")
	require.Equal(t, int64(50), idle.WaitingAtEnd)
	require.Zero(t, idle.Calls, "nothing woke a waiter over the interval")
	require.GreaterOrEqual(t, idle.CPUSeconds, 0.0)
	require.InDelta(t, idle.CPUSeconds/idle.Seconds*100, idle.CPUPercentOfCore, 1e-9)
	require.Positive(t, idle.RSSStartBytes)
	require.Positive(t, idle.RSSEndBytes)
	require.GreaterOrEqual(t, idle.PeakRSSBytes, idle.RSSEndBytes)
	require.Contains(t, stdout.String(), "ledgerd at rest")
}
