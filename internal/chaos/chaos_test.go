package chaos_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ledgerd/ledgerd/internal/chaos"
	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// workerArg makes the test binary a worker process: the harness starts
// "<test binary> chaos-worker --spec JSON".
const workerArg = "chaos-worker"

// TestMain runs the worker processes the short mix starts (this binary,
// re-executed), and otherwise the tests, checking that they leak no
// goroutine. The harness starts its own PostgreSQL cluster (it restarts
// and pauses it), so LEDGER_TEST_DATABASE_URL is not used.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == workerArg {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := chaos.WorkerMain(ctx, os.Args[2:], os.Stdin, os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binDir != "" {
			_ = os.RemoveAll(binDir)
		}
		os.Exit(code)
	}))
}

// binDir holds the ledgerd binary that the short runs share; TestMain
// removes it.
var binDir string

// ledgerdBinary builds ./cmd/ledgerd once for every short run of the test
// binary.
var ledgerdBinary = sync.OnceValues(func() (string, error) {
	root, err := devcluster.ModuleRoot()
	if err != nil {
		return "", err
	}
	if binDir, err = os.MkdirTemp("", "chaos-test-bin"); err != nil {
		return "", err
	}
	binary := filepath.Join(binDir, "ledgerd")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return binary, devcluster.BuildLedgerd(ctx, root, binary)
})

// runShort runs scenarios small and bounded, against ledgerd processes
// started with the extra flags ledgerdArgs, and returns the report.
func runShort(t *testing.T, scenarios []string, ledgerdArgs ...string) *chaos.Report {
	t.Helper()
	return runShortWith(t, scenarios, func(*chaos.Config) {}, ledgerdArgs...)
}

// runShortWith is runShort with changes to the configuration.
func runShortWith(t *testing.T, scenarios []string, change func(*chaos.Config), ledgerdArgs ...string) *chaos.Report {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL and two ledgerd processes; skipped with -short")
	}
	binary, err := ledgerdBinary()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cfg := chaos.Config{
		Scenarios:         scenarios,
		Cycles:            150,
		Faults:            2,
		FaultInterval:     300 * time.Millisecond,
		MaxDuration:       time.Minute,
		GoroutineWorkers:  4,
		WorkerProcesses:   2,
		WorkersPerProcess: 2,
		LeaseTTL:          500 * time.Millisecond,
		LedgerdBinary:     binary,
		LedgerdArgs:       ledgerdArgs,
		WorkerCommand:     []string{os.Args[0], workerArg},
	}
	change(&cfg)
	report, err := chaos.Run(ctx, cfg)
	require.NoError(t, err)
	t.Log("\n" + report.Markdown())
	require.Len(t, report.Scenarios, len(scenarios))
	return report
}

// requirePromisesKept checks that a scenario found no duplicate, nothing
// lost, no stale call accepted, no drain failure and no overrun, that it
// reached its size and that every fault was injected and healed.
func requirePromisesKept(t *testing.T, s chaos.ScenarioReport) {
	t.Helper()
	t.Run(s.Name, func(t *testing.T) {
		require.Zero(t, s.Duplicates.Total, "duplicates")
		require.Zero(t, s.Lost.Total, "lost")
		require.Zero(t, s.StaleAccepted.Total, "stale accepted")
		require.Zero(t, s.DrainFailures, "calls failed by a drain")
		require.Zero(t, s.Overruns, "calls past their deadline")
		require.Zero(t, s.StaleAccepted.Regressions, "fencing tokens that did not grow")
		require.GreaterOrEqual(t, s.Cycles, 150)
		require.Positive(t, s.Ops.OK)
		for _, f := range s.FaultLog {
			require.Empty(t, f.Error, f.Detail)
		}
		require.True(t, s.Passed, "failures: %v", s.Failures)
	})
}

// requireEveryNemesis checks that a mix injected every nemesis.
func requireEveryNemesis(t *testing.T, mix chaos.ScenarioReport) {
	t.Helper()
	injected := map[string]bool{}
	for _, f := range mix.FaultLog {
		injected[f.Nemesis] = true
	}
	// Every scenario's but the mix's own and pg-failover's, which needs a
	// Patroni cluster.
	require.Len(t, injected, len(chaos.Scenarios())-2, "the mix injects every nemesis")
	require.NotContains(t, injected, "pg-failover")
}

// TestShortMix runs the pause scenario and a mix of every nemesis, small
// and bounded, and checks that the ledger kept its promises — and that
// the unfenced control sink did not, which proves that the faults hit.
func TestShortMix(t *testing.T) {
	report := runShort(t, []string{"pause", "mix"})
	for _, s := range report.Scenarios {
		requirePromisesKept(t, s)
		require.Equal(t, "on", s.Coalescing, "coalescing is on by default")
	}

	pause := report.Scenarios[0]
	require.Equal(t, 2, pause.Faults)
	require.Positive(t, pause.Control.Duplicates,
		"the control sink must show a zombie's write after a takeover's, or the pauses hit nothing")
	require.Positive(t, pause.RefusedStale, "a zombie's call must have been refused")

	requireEveryNemesis(t, report.Scenarios[1])
	require.True(t, report.Passed)
}

// TestShortMixNoCoalesce runs the short mix against ledgerd processes
// started with --no-coalesce, the production flag that gives every Reserve,
// Complete and Lookup a statement of its own: the promises must hold on
// that code path too. The mix alone injects every nemesis, pause included,
// so the separate pause scenario is left to TestShortMix.
func TestShortMixNoCoalesce(t *testing.T) {
	report := runShort(t, []string{"mix"}, "--no-coalesce")
	require.Equal(t, []string{"--no-coalesce"}, report.Config["ledgerd_args"])
	mix := report.Scenarios[0]
	require.Equal(t, "off", mix.Coalescing, "every replica served without coalescing")
	requirePromisesKept(t, mix)
	requireEveryNemesis(t, mix)
	require.True(t, report.Passed)
}

// TestShortPGFailover runs the pg-failover scenario small, over a Patroni
// cluster: the primary killed, switched over and isolated once each, with
// workers running throughout. Every acknowledged Complete must survive,
// every key's fencing tokens must grow across the failovers, and each
// failover must end with Completes succeeding again.
func TestShortPGFailover(t *testing.T) {
	report := runShortWith(t, []string{"pg-failover"}, func(cfg *chaos.Config) {
		cfg.Faults = 1 // of each kind
		cfg.FaultInterval = time.Second
		cfg.MaxDuration = 2 * time.Minute // per kind
		cfg.AttemptTimeout = 3 * time.Second
		cfg.DoTimeout = time.Minute // a failover may take tens of seconds on a loaded machine
	})
	failover := report.Scenarios[0]
	requirePromisesKept(t, failover)
	require.Equal(t, 3, failover.Faults)
	for _, kind := range []string{"kill", "switchover", "isolate"} {
		k, ok := failover.ByKind[kind]
		require.True(t, ok, "no %s fault", kind)
		require.Equal(t, 1, k.Faults, kind)
		require.Zero(t, k.FirstSuccessMissing, "no Complete succeeded after the %s failover", kind)
	}
	require.True(t, report.Passed)
}
