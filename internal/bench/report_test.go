package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func measured(ops int64, elapsed time.Duration, latency time.Duration) measurement {
	m := measurement{ops: ops, items: ops, elapsed: elapsed, histogram: NewHistogram(), outcomes: map[string]int64{}}
	for range ops {
		m.histogram.Record(latency)
	}
	return m
}

func TestRatiosAndJSON(t *testing.T) {
	t.Parallel()
	runs := []RunResult{
		newRunResult("pair", SideLedgerd, 32, measured(1500, time.Second, 20*time.Millisecond)),
		newRunResult("pair", SideRaw, 32, measured(2000, time.Second, 10*time.Millisecond)),
		newRunResult("lookup", SideLedgerd, 32, measured(100, time.Second, time.Millisecond)), // no raw run: no ratio
	}
	runs[0].LedgerdPeakRSSBytes = 40 << 20
	report := &Report{Runs: runs, Ratios: ratios(runs), Machine: Machine{CPUs: 2, Fsync: "on", SynchronousCommit: "on"}}

	require.Len(t, report.Ratios, 1)
	q := report.Ratios[0]
	require.Equal(t, "pair", q.Workload)
	require.InDelta(t, 1500, q.LedgerdPerSec, 0.001)
	require.InDelta(t, 2000, q.RawPerSec, 0.001)
	require.InDelta(t, 0.75, q.Ratio, 0.0001)
	require.InEpsilon(t, 20_000, q.LedgerdP99Us, 0.001)
	require.InEpsilon(t, 10_000, q.RawP50Us, 0.001)
	require.InDelta(t, 40, q.LedgerdRSSMiB, 0.001)

	path := filepath.Join(t.TempDir(), "report.json")
	require.NoError(t, report.WriteJSON(path))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var decoded map[string]any
	require.NoError(t, json.Unmarshal(data, &decoded))
	ratio := decoded["ratios"].([]any)[0].(map[string]any)
	require.InDelta(t, 0.75, ratio["ratio"], 0.0001)
	run := decoded["runs"].([]any)[0].(map[string]any)
	require.Equal(t, "ledgerd", run["side"])
	require.Contains(t, run["latency"], "p99_9_us")
	var back Report
	require.NoError(t, json.Unmarshal(data, &back))
	require.Equal(t, report.Runs, back.Runs)

	var out bytes.Buffer
	report.Print(&out)
	require.Contains(t, out.String(), "ledgerd / raw")
	require.Contains(t, out.String(), "0.75")
	require.NotContains(t, out.String(), "NOT DURABLE")
}

func TestPrintFlagsANonDurableDatabase(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	(&Report{Machine: Machine{PostgresVersion: "15", Fsync: "off", SynchronousCommit: "on"}}).Print(&out)
	require.Contains(t, out.String(), "NOT DURABLE")
}
