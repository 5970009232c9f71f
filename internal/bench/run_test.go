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

	require.Len(t, report.Runs, 10) // 5 workloads × 2 sides
	for _, run := range report.Runs {
		require.Zero(t, run.Errors, "%s %s: %v", run.Workload, run.Side, run.ErrorSamples)
		require.Positive(t, run.Ops, "%s %s", run.Workload, run.Side)
		require.Positive(t, run.Latency.P99Micros)
	}
	require.Len(t, report.Ratios, 5)
	for _, q := range report.Ratios {
		require.Positive(t, q.Ratio, q.Workload)
	}
	contended := report.Runs[6]
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
