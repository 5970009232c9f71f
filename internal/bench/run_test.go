package bench_test

import (
	"bytes"
	"context"
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
