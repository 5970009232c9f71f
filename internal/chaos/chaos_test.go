package chaos_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ledgerd/ledgerd/internal/chaos"
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
	goleak.VerifyTestMain(m)
}

// TestShortMix runs the pause scenario and a mix of every nemesis, small
// and bounded, and checks that the ledger kept its promises — and that
// the unfenced control sink did not, which proves that the faults hit.
func TestShortMix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two ledgerd processes; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	report, err := chaos.Run(ctx, chaos.Config{
		Scenarios:         []string{"pause", "mix"},
		Cycles:            150,
		Faults:            2,
		FaultInterval:     300 * time.Millisecond,
		MaxDuration:       time.Minute,
		GoroutineWorkers:  4,
		WorkerProcesses:   2,
		WorkersPerProcess: 2,
		LeaseTTL:          500 * time.Millisecond,
		WorkerCommand:     []string{os.Args[0], workerArg},
	})
	require.NoError(t, err)
	t.Log("\n" + report.Markdown())
	require.Len(t, report.Scenarios, 2)

	for _, s := range report.Scenarios {
		t.Run(s.Name, func(t *testing.T) {
			require.Zero(t, s.Duplicates.Total, "duplicates")
			require.Zero(t, s.Lost.Total, "lost")
			require.Zero(t, s.StaleAccepted.Total, "stale accepted")
			require.Zero(t, s.DrainFailures, "calls failed by a drain")
			require.Zero(t, s.Overruns, "calls past their deadline")
			require.GreaterOrEqual(t, s.Cycles, 150)
			require.Positive(t, s.Ops.OK)
			for _, f := range s.FaultLog {
				require.Empty(t, f.Error, f.Detail)
			}
			require.True(t, s.Passed, "failures: %v", s.Failures)
		})
	}

	pause := report.Scenarios[0]
	require.Equal(t, 2, pause.Faults)
	require.Positive(t, pause.Control.Duplicates,
		"the control sink must show a zombie's write after a takeover's, or the pauses hit nothing")
	require.Positive(t, pause.RefusedStale, "a zombie's call must have been refused")

	mix := report.Scenarios[1]
	injected := map[string]bool{}
	for _, f := range mix.FaultLog {
		injected[f.Nemesis] = true
	}
	require.Len(t, injected, len(chaos.Scenarios())-1, "the mix injects every nemesis")
	require.True(t, report.Passed)
}
