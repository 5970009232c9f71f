// Command ledgerchaos is ledgerd's chaos harness: it runs workers against
// two ledgerd replicas over a PostgreSQL cluster of its own while it
// crashes, pauses and restarts them, then checks the history and the final
// state for duplicates, lost acknowledgements and stale tokens accepted.
//
//	ledgerchaos [flags]
//
// See docs/reliability.md for what each scenario does and proves, and
// `ledgerchaos --help` for the flags. The exit status is 0 when every
// scenario passed, 1 when one failed, 2 for bad usage and 3 when the
// harness itself could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/internal/chaos"
)

// Exit statuses.
const (
	exitPassed       = 0
	exitFailed       = 1
	exitUsage        = 2
	exitHarnessError = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop() // not deferred: os.Exit would skip it
	os.Exit(code)
}

const usage = `ledgerchaos runs ledgerd's chaos scenarios and checks that no completion is
duplicated or lost and that no stale fencing token is ever accepted.

It starts its own PostgreSQL (scripts/pg.sh, in a temporary directory) and
two ledgerd replicas (built from ./cmd/ledgerd) on 127.0.0.1, runs workers
in this process and in worker processes, injects each scenario's faults,
and writes chaos-report.json and chaos-report.md into --out. Run it from
the repository (it looks for ledgerd's go.mod upwards).

Scenarios: %s

Exit status: 0 every scenario passed, 1 one failed, 2 bad usage, 3 the
harness could not run.

Usage: ledgerchaos [flags]

Flags:
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "worker" {
		// The worker processes the harness starts (hidden: not for people).
		if err := chaos.WorkerMain(ctx, args[1:], stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "ledgerchaos worker:", err)
			return exitHarnessError
		}
		return exitPassed
	}
	cfg, out, doc, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitPassed
	}
	if err != nil {
		fmt.Fprintln(stderr, "ledgerchaos:", err)
		return exitUsage
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "ledgerchaos:", err)
		return exitHarnessError
	}
	cfg.WorkerCommand = []string{self, "worker"}

	report, err := chaos.Run(ctx, cfg)
	if report != nil && len(report.Scenarios) > 0 {
		fmt.Fprint(stdout, report.Markdown())
		if werr := report.WriteFiles(out); werr != nil {
			err = errors.Join(err, werr)
		}
		if doc != "" && err == nil {
			err = report.UpdateDocument(doc, "make chaos  # ledgerchaos "+strings.Join(args, " "))
		}
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "ledgerchaos:", err)
		return exitHarnessError
	case !report.Passed:
		fmt.Fprintln(stderr, "ledgerchaos: FAILED (see the report)")
		return exitFailed
	}
	fmt.Fprintln(stderr, "ledgerchaos: every scenario passed")
	return exitPassed
}

// parseFlags turns the flags into a chaos.Config, the report directory
// and the document to update.
func parseFlags(args []string, stderr io.Writer) (cfg chaos.Config, out, doc string, err error) {
	fs := flag.NewFlagSet("ledgerchaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage, strings.Join(chaos.Scenarios(), ", "))
		fs.PrintDefaults()
	}
	scenarios := fs.String("scenarios", strings.Join(chaos.Scenarios(), ","), "comma-separated scenarios to run, in this order")
	fs.IntVar(&cfg.Cycles, "cycles", 10000, "Reserve→Complete cycles (completed keys) each scenario runs at least")
	fs.IntVar(&cfg.Faults, "faults", 20, "faults each scenario injects at least")
	fs.DurationVar(&cfg.FaultInterval, "fault-interval", 2*time.Second, "quiet time before each fault, ±50%")
	fs.DurationVar(&cfg.MaxDuration, "max-duration", 10*time.Minute, "bound on each scenario; one that stops short of --cycles or --faults fails")
	fs.IntVar(&cfg.GoroutineWorkers, "goroutine-workers", 16, "workers in the harness's process (one per key chain)")
	fs.IntVar(&cfg.WorkerProcesses, "worker-processes", 4, "worker processes (every other one calls Reserve and Complete itself instead of Do)")
	fs.IntVar(&cfg.WorkersPerProcess, "workers-per-process", 4, "workers in each worker process")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", time.Second, "lease the workers ask for")
	fs.DurationVar(&cfg.WorkTime, "work-time", 20*time.Millisecond, "average duration of one work (±50%)")
	fs.DurationVar(&cfg.AttemptTimeout, "attempt-timeout", 2*time.Second, "deadline of one RPC attempt (the client retries after it)")
	fs.DurationVar(&cfg.DoTimeout, "do-timeout", 10*time.Second, "bound on a worker's calls for one key")
	fs.BoolVar(&cfg.Fsync, "fsync", false, "keep fsync on in the PostgreSQL cluster (synchronous_commit is on either way)")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the cluster, binaries and logs; a temporary one (removed) if empty")
	fs.BoolVar(&cfg.KeepDir, "keep-dir", false, "keep the temporary directory (logs) afterwards")
	fs.StringVar(&cfg.LedgerdBinary, "ledgerd-binary", "", "ledgerd to run; built from ./cmd/ledgerd if empty")
	fs.Func("ledgerd-flag", "extra flag for every ledgerd serve the harness starts, e.g. --ledgerd-flag=--no-coalesce (repeatable)", func(value string) error {
		cfg.LedgerdArgs = append(cfg.LedgerdArgs, value)
		return nil
	})
	fs.StringVar(&out, "out", ".", "directory for chaos-report.json and chaos-report.md")
	fs.StringVar(&doc, "doc", "", "markdown file whose block between the ledgerchaos markers gets the figures (e.g. docs/reliability.md)")
	verbose := fs.Bool("v", false, "log every fault")
	if err := fs.Parse(args); err != nil {
		return cfg, "", "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", "", fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.Scenarios = strings.Split(*scenarios, ",")
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return cfg, out, doc, nil
}
