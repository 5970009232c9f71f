package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
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

// TestFloorOverheadAndSecureCost: each ledgerd side's ratio carries the
// floor of its side and concurrency, and the overhead is ledgerd p50 − raw
// p50 − calls × floor p50; the secure side is compared with the ledgerd
// side per call.
func TestFloorOverheadAndSecureCost(t *testing.T) {
	t.Parallel()
	run := func(workload, side string, calls int, latency time.Duration) RunResult {
		r := newRunResult(workload, side, 1, measured(1000, time.Second, latency))
		r.CallsPerOp = calls
		return r
	}
	runs := []RunResult{
		run(FloorWorkload, SideLedgerd, 1, 100*time.Microsecond),
		run(FloorWorkload, SideSecure, 1, 130*time.Microsecond),
		run("pair", SideLedgerd, 2, 2000*time.Microsecond),
		run("pair", SideSecure, 2, 2100*time.Microsecond),
		run("pair", SideRaw, 0, 1200*time.Microsecond),
		run("lookup", SideLedgerd, 1, 600*time.Microsecond),
		run("lookup", SideRaw, 0, 250*time.Microsecond),
	}
	q := ratios(runs)
	require.Len(t, q, 3, "pair on both ledgerd sides, lookup on one; the floor has no raw side")
	overhead := map[string]int64{}
	for _, r := range q {
		require.NotNil(t, r.FloorP50Us, "%s %s", r.Workload, r.Side)
		floor := runs[slices.IndexFunc(runs, func(x RunResult) bool { return x.Workload == FloorWorkload && x.Side == r.Side })].Latency.P50Micros
		require.Equal(t, floor, *r.FloorP50Us)
		require.Equal(t, r.LedgerdP50Us-r.RawP50Us-int64(r.CallsPerOp)*floor, *r.OverheadP50Us)
		overhead[r.Workload+"/"+r.Side] = *r.OverheadP50Us
	}
	require.InDelta(t, 2000-1200-2*100, overhead["pair/ledgerd"], 3)
	require.InDelta(t, 2100-1200-2*130, overhead["pair/secure"], 3)
	require.InDelta(t, 600-250-100, overhead["lookup/ledgerd"], 2)

	costs := secureCosts(runs)
	require.Len(t, costs, 2)
	require.Equal(t, FloorWorkload, costs[0].Workload)
	pair := costs[1]
	require.Equal(t, pair.SecureP50Us-pair.InsecureP50Us, pair.P50DiffUs)
	require.Equal(t, pair.P50DiffUs/2, pair.P50DiffPerCallUs)

	var out bytes.Buffer
	(&Report{Runs: runs, Ratios: q, SecureCosts: costs}).Print(&out)
	require.Contains(t, out.String(), "floor p50")
	require.Contains(t, out.String(), "secure / ledgerd")
}

// TestRatioWithoutFloor: a run without the floor workload leaves the floor
// and the overhead out, rather than subtracting nothing.
func TestRatioWithoutFloor(t *testing.T) {
	t.Parallel()
	runs := []RunResult{
		newRunResult("lookup", SideLedgerd, 1, measured(10, time.Second, time.Millisecond)),
		newRunResult("lookup", SideRaw, 1, measured(10, time.Second, time.Millisecond)),
	}
	q := ratios(runs)
	require.Len(t, q, 1)
	require.Nil(t, q[0].FloorP50Us)
	require.Nil(t, q[0].OverheadP50Us)
	var out bytes.Buffer
	(&Report{Runs: runs, Ratios: q}).Print(&out)
	require.Regexp(t, `lookup\s+ledgerd\s+-\s+1\s.*\s1\s+-\s+-`, out.String())
}
