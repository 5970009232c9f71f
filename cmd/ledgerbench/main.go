// Command ledgerbench measures ledgerd against the raw-SQL ceiling of the
// same PostgreSQL in one run.
//
// For each workload (floor, pair, replay, lookup, contended, batch) it runs
// N concurrent workers for a fixed duration or
// number of operations through ledgerd's gRPC API, then runs the very
// statements ledgerd issues for that workload (ledger/queries/*.sql, with
// the same arguments) straight against the same database with the same
// concurrency, and prints throughput, latency percentiles (p50, p95, p99,
// p99.9) and the ledgerd / raw ratio. The floor workload (the gRPC health
// Check through the same connections) shows the transport's own cost
// beside each workload, and the latency overhead ledgerd adds above the
// database and the transport: ledgerd p50 − raw p50 − calls × floor p50.
// A progress line goes to stderr every second; --json writes the whole
// report.
//
// With no flags it builds ./cmd/ledgerd, starts a private PostgreSQL with
// scripts/pg.sh (fsync and synchronous_commit on, so that the figures are
// honest) and a ledgerd over it, and runs every workload for 10s at 32
// workers on each side:
//
//	go run ./cmd/ledgerbench
//	go run ./cmd/ledgerbench --workers 32,64 --json bench.json
//	go run ./cmd/ledgerbench --pg-dir .data/bench-pg --prefill 10000000 --purge 100000
//	go run ./cmd/ledgerbench --replicas 4 --workloads pair --sides ledgerd
//	go run ./cmd/ledgerbench --addr ledgerd:7070 --database-url postgres://… --token-file t
//	go run ./cmd/ledgerbench --secure --workers 1,64
//	go run ./cmd/ledgerbench --idle 60s --idle-waiters 10000
//
// --secure adds a side: ledgerd as platforms run it (TLS, API tokens, rate
// limits that do not bind), over a database of its own, measured in the
// same run and compared with the development-mode ledgerd. --idle measures
// a started ledgerd at rest instead: its CPU time and memory, alone or
// with Reserves waiting on held keys.
//
// --replicas N starts N ledgerd processes over the same PostgreSQL, each
// with its own pool of --db-max-conns, spreads the workers over them and
// reports what each did: calls, peak RSS, CPU time, PostgreSQL sessions and
// coalesced calls per statement (read from its /metrics).
//
// `ledgerbench --help` lists the flags; docs/performance.md has the
// figures and how they were made.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ledgerd/ledgerd/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usageHeader = `ledgerbench measures ledgerd against the raw-SQL ceiling of the same PostgreSQL.

Usage:
  ledgerbench [flags]

Without --addr it builds ./cmd/ledgerd and starts it (and, without
--database-url, a private PostgreSQL with fsync on) for the run. Workloads:
`

// run is main without the process, so that tests can drive it. It returns
// the exit code: 0, 1 for a failed run, 2 for bad flags.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "ledgerbench:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "ledgerbench:", err)
		return 2
	}
	if _, err := bench.Run(ctx, cfg, append([]string{"ledgerbench"}, args...), stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "ledgerbench:", err)
		return 1
	}
	return 0
}

// parseFlags turns the command line into a Config; the defaults shown are
// DefaultConfig's.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (bench.Config, error) {
	d := bench.DefaultConfig()
	var cfg bench.Config
	var workloads, sides, workers, tokenFile string
	var secure bool
	var ledgerdArgs stringList
	fs := flag.NewFlagSet("ledgerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", "", "gRPC address of a running ledgerd to measure (default: build and start one)")
	fs.StringVar(&cfg.Token, "token", "", "API token for --addr (others see it in ps: prefer --token-file or LEDGERBENCH_TOKEN)")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the API token for --addr")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "connect to --addr without TLS")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL that ledgerd runs over: the raw side, --prefill, --purge and a started ledgerd use it (default: a private cluster, started with scripts/pg.sh)")
	fs.StringVar(&cfg.PGDir, "pg-dir", "", "keep the private cluster's data in this directory (stopped, not deleted, at the end), e.g. to reuse a prefill (default: a temporary one)")
	fs.StringVar(&cfg.LedgerdBin, "ledgerd-bin", "", "run this ledgerd binary instead of building ./cmd/ledgerd")
	fs.Var(&ledgerdArgs, "ledgerd-flag", "extra flag for a started ledgerd serve, e.g. --ledgerd-flag=--db-max-conns=8 (repeatable)")
	fs.IntVar(&cfg.Replicas, "replicas", d.Replicas, fmt.Sprintf("start this many ledgerd processes (1 to %d) over the same PostgreSQL, each with its own pool of --db-max-conns, and spread the workers over them round robin; the raw side is unaffected", bench.MaxReplicas))
	fs.IntVar(&cfg.DBMaxConns, "db-max-conns", d.DBMaxConns, "--db-max-conns of each started ledgerd")
	fs.IntVar(&cfg.RawConns, "raw-conns", 0, "pool size of the raw side (default: --db-max-conns, the pool ledgerd has)")
	fs.IntVar(&cfg.GRPCConns, "grpc-conns", d.GRPCConns, "gRPC connections to each ledgerd, shared by the workers that call it")
	fs.StringVar(&workloads, "workloads", strings.Join(d.Workloads, ","), "comma-separated workloads to run, in order")
	fs.StringVar(&sides, "sides", strings.Join(d.Sides, ","), "comma-separated sides to run: ledgerd (development mode), secure (see --secure), raw")
	fs.BoolVar(&secure, "secure", false, "add the secure side after the ledgerd side: a started ledgerd as platforms run it (TLS with certificates made for the run, API tokens minted through the API, rate limits that do not bind) over a database of its own on the same PostgreSQL, and report its cost against the ledgerd side")
	fs.DurationVar(&cfg.Idle, "idle", 0, "instead of the workloads, leave each started ledgerd at rest this long and report its CPU time and memory (e.g. 60s)")
	fs.IntVar(&cfg.IdleWaiters, "idle-waiters", 0, "with --idle: hold this many Reserves waiting (wait_timeout) on keys another owner holds, e.g. 10000")
	fs.StringVar(&workers, "workers", joinInts(d.Workers), "comma-separated numbers of concurrent workers; every workload runs at each")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long each workload runs on each side (default 10s unless --ops is given)")
	fs.Int64Var(&cfg.Ops, "ops", 0, "end each workload after this many operations instead (0: by --duration)")
	fs.Int64Var(&cfg.Rate, "rate", 0, "pace the workers to this many operations a second in all, with latencies counted from when each was due (0: flat out)")
	fs.DurationVar(&cfg.Warmup, "warmup", d.Warmup, "unmeasured run of each workload before it is measured (0 for none)")
	fs.StringVar(&cfg.Namespace, "namespace", d.Namespace, "namespace of every key of the run")
	fs.IntVar(&cfg.Keys, "keys", d.Keys, "completed keys that replay and lookup draw from (made through ledgerd first), unless --prefill: then the prefilled keys")
	fs.IntVar(&cfg.ContendedKeys, "contended-keys", d.ContendedKeys, "keys the contended workload's workers fight over")
	fs.DurationVar(&cfg.ContendedLeaseTTL, "contended-lease-ttl", d.ContendedLeaseTTL, "lease the contended workload asks for (a started ledgerd allows 10ms and up; another needs its --min-lease-ttl at most this)")
	fs.IntVar(&cfg.BatchSize, "batch-size", d.BatchSize, "keys per call of the batch workload")
	fs.Int64Var(&cfg.Prefill, "prefill", 0, "before the workloads, make sure the namespace holds this many completed entries and their events (written in SQL; kept across runs with --pg-dir)")
	fs.Int64Var(&cfg.Purge, "purge", 0, "at the end, time PurgeExpired (the sweeper's statement) idle and over this many expired entries")
	fs.StringVar(&cfg.JSONPath, "json", "", "write the report as JSON to this file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		for _, w := range bench.Workloads {
			fmt.Fprintf(fs.Output(), "  %-10s %s\n", w.Name, w.Description)
		}
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(fs.Output(), "  --%s\n    \t%s", f.Name, f.Usage)
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				fmt.Fprintf(fs.Output(), " (default %s)", f.DefValue)
			}
			fmt.Fprintln(fs.Output())
		})
	}
	if err := fs.Parse(args); err != nil {
		return bench.Config{}, err
	}
	if fs.NArg() > 0 {
		return bench.Config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.Replicas < 1 {
		// Config reads 0 as the default; on the command line it is a mistake.
		return bench.Config{}, fmt.Errorf("--replicas must be between 1 and %d, got %d", bench.MaxReplicas, cfg.Replicas)
	}
	cfg.LedgerdArgs = ledgerdArgs
	cfg.Workloads = splitList(workloads)
	cfg.Sides = splitList(sides)
	if secure && !slices.Contains(cfg.Sides, bench.SideSecure) {
		at := 0
		if i := slices.Index(cfg.Sides, bench.SideLedgerd); i >= 0 {
			at = i + 1
		}
		cfg.Sides = slices.Insert(cfg.Sides, at, bench.SideSecure)
	}
	var err error
	if cfg.Workers, err = parseInts("--workers", workers); err != nil {
		return bench.Config{}, err
	}
	if cfg.Token == "" {
		cfg.Token = getenv("LEDGERBENCH_TOKEN")
	}
	if tokenFile != "" {
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return bench.Config{}, fmt.Errorf("--token-file: %w", err)
		}
		cfg.Token = strings.TrimSpace(string(data))
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = -1 // none; zero would mean the default
	}
	return cfg, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(value string) error {
	*l = append(*l, value)
	return nil
}

func splitList(list string) []string {
	var out []string
	for item := range strings.SplitSeq(list, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func parseInts(flagName, list string) ([]int, error) {
	var out []int
	for _, item := range splitList(list) {
		n, err := strconv.Atoi(item)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number", flagName, item)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(numbers []int) string {
	parts := make([]string, len(numbers))
	for i, n := range numbers {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}
