package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// runner holds what a run has set up: the clients, the pools, and the
// ledgerd processes it started.
type runner struct {
	cfg    Config
	stdout io.Writer
	stderr io.Writer
	runID  string
	conns  []*grpc.ClientConn
	// clients holds, for each ledgerd, the clients of its connections.
	clients    [][]ledgerv1.LedgerServiceClient
	admin      ledgerv1.LedgerAdminServiceClient
	pool       *pgxpool.Pool // nil without a database
	raw        *rawDB
	replicas   []*replica   // the started ledgerd processes; none when measuring --addr
	http       *http.Client // reads their /metrics
	readKeys   keySet
	peakRSS    int64
	postmaster int // the postmaster of a cluster on this machine, for its CPU time; 0 otherwise
	closers    []func()
}

// Run performs the run cfg describes: it starts what it must (PostgreSQL,
// ledgerd), prefills, runs every workload on every side at every
// concurrency, measures the purge, prints the report to stdout (progress
// goes to stderr), writes the JSON if asked, and stops what it started.
// command is recorded in the report. It fails with Validate's error for a
// bad Config, and when a set-up step fails; a workload whose operations
// fail is reported with its errors, not as a failure of the run.
func Run(ctx context.Context, cfg Config, command []string, stdout, stderr io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &runner{cfg: cfg, stdout: stdout, stderr: stderr, runID: strings.ToLower(rand.Text()[:8]),
		// No idle connections: nothing of the client outlives the run.
		http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	defer r.close()
	report := &Report{StartedAt: time.Now().UTC(), Command: command, Settings: settingsOf(cfg)}
	if err := r.setUp(ctx, report); err != nil {
		return nil, err
	}
	if cfg.Prefill > 0 {
		fmt.Fprintf(stderr, "ledgerbench: prefilling %d entries\n", cfg.Prefill)
		p, err := prefill(ctx, r.pool, cfg.Namespace, cfg.Prefill, stderr)
		if err != nil {
			return nil, err
		}
		report.Prefill = p
		r.readKeys = keySet{prefix: prefillPrefix, count: cfg.Prefill}
	}
	for _, workers := range cfg.Workers {
		for _, name := range cfg.Workloads {
			w, _ := workloadByName(name)
			if w.readKeys && r.readKeys.count == 0 {
				if err := r.makeReadKeys(ctx); err != nil {
					return nil, err
				}
			}
			for _, side := range cfg.Sides {
				run, ok := r.measure(ctx, w, side, workers)
				if ok {
					report.Runs = append(report.Runs, run)
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
		}
	}
	report.Ratios = ratios(report.Runs)
	report.Machine.LoadAverage[1] = loadAverage()
	if cfg.Purge > 0 {
		p, err := r.measurePurge(ctx)
		if err != nil {
			return nil, err
		}
		report.Purge = p
	}
	r.notePeaks()
	report.LedgerdPeakRSSBytes = r.peakRSS
	report.Print(stdout)
	if cfg.JSONPath != "" {
		if err := report.WriteJSON(cfg.JSONPath); err != nil {
			return nil, fmt.Errorf("--json: %w", err)
		}
	}
	return report, nil
}

// setUp starts PostgreSQL and ledgerd unless they are given, opens the
// pool and the gRPC connections, and describes the machine.
func (r *runner) setUp(ctx context.Context, report *Report) error {
	cfg := r.cfg
	report.Machine = Machine{CPUs: runtime.NumCPU(), MemoryBytes: memoryBytes(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		LoadAverage: [2]float64{loadAverage()}}
	databaseURL := cfg.DatabaseURL
	var root string
	if cfg.Addr == "" && (databaseURL == "" || cfg.LedgerdBin == "") {
		var err error
		if root, err = devcluster.ModuleRoot(); err != nil {
			return fmt.Errorf("%w: run ledgerbench from the checkout, or give --database-url and --ledgerd-bin", err)
		}
	}
	private := cfg.Addr == "" && databaseURL == ""
	if private {
		fmt.Fprintln(r.stderr, "ledgerbench: starting a private PostgreSQL (fsync on) with scripts/pg.sh")
		// Durable: a cluster without fsync would make the write figures fake.
		pg, err := devcluster.StartPostgres(ctx, devcluster.PostgresConfig{
			Dir: cfg.PGDir, Durability: devcluster.Durable, Keep: cfg.PGDir != "", Log: r.stderr,
		})
		if err != nil {
			return err
		}
		r.onClose(func() { r.stopPostgres(pg) })
		databaseURL = pg.URL()
	}
	if databaseURL != "" {
		pool, err := openPool(ctx, databaseURL, cfg.RawConns)
		if err != nil {
			return err
		}
		r.pool = pool
		if private || onThisMachine(pool) {
			r.postmaster = postmasterPID(ctx, pool)
		}
		if r.raw, err = newRawDB(pool); err != nil {
			return err
		}
		if err := describePostgres(ctx, pool, &report.Machine); err != nil {
			return err
		}
		if !report.Machine.Durable() {
			fmt.Fprintf(r.stderr, "ledgerbench: WARNING: fsync=%s synchronous_commit=%s: commits are not durable, the write figures are not honest\n",
				report.Machine.Fsync, report.Machine.SynchronousCommit)
		}
		if limit, _ := strconv.Atoi(report.Machine.MaxConnections); cfg.Addr == "" && limit > 0 {
			// Each ledgerd: its pool and its LISTEN connection.
			if need := cfg.Replicas*(cfg.DBMaxConns+1) + cfg.RawConns; need > limit {
				fmt.Fprintf(r.stderr, "ledgerbench: WARNING: %d ledgerd × (--db-max-conns %d + 1) + --raw-conns %d = %d connections, more than max_connections (%d): lower --db-max-conns\n",
					cfg.Replicas, cfg.DBMaxConns, cfg.RawConns, need, limit)
			}
		}
	}
	if cfg.Addr != "" {
		return r.dial([]string{cfg.Addr})
	}
	// The binary (when built) and the ledgerd logs, removed at the end.
	dir, err := os.MkdirTemp("", "ledgerbench-ledgerd-")
	if err != nil {
		return err
	}
	r.onClose(func() { _ = os.RemoveAll(dir) })
	bin := cfg.LedgerdBin
	if bin == "" {
		bin = filepath.Join(dir, "ledgerd")
		fmt.Fprintln(r.stderr, "ledgerbench: building ./cmd/ledgerd")
		if err := devcluster.BuildLedgerd(ctx, root, bin); err != nil {
			return err
		}
	}
	if err := r.startReplicas(ctx, bin, databaseURL, dir); err != nil {
		return err
	}
	addrs := make([]string, len(r.replicas))
	for i, rep := range r.replicas {
		addrs[i] = rep.ledgerd.Addr()
	}
	return r.dial(addrs)
}

// ledgerdArgs are the flags of a started `ledgerd serve`, before
// Config.LedgerdArgs: development mode, with its HTTP port on httpAddr (a
// loopback address: its /metrics is read before and after each measured
// phase, never during one), without its sweeper (retention is measured on
// its own, by --purge), allowing the contended workload's short leases and
// a long PurgeExpired.
func ledgerdArgs(dbMaxConns int, httpAddr string) []string {
	return []string{
		"--insecure-dev",
		"--http-addr", httpAddr,
		"--sweep-interval", "0",
		"--min-lease-ttl", "10ms",
		"--max-request-timeout", "1h", // PurgeExpired over many rows
		"--db-max-conns", strconv.Itoa(dbMaxConns),
		"--log-format", "json",
		"--log-level", "warn",
	}
}

// stopLedgerd stops a started ledgerd and passes on the errors it logged.
func (r *runner) stopLedgerd(l *devcluster.Ledgerd) {
	if err := l.Stop(); err != nil {
		fmt.Fprintf(r.stderr, "ledgerbench: %v\n", err)
	}
	for line := range strings.SplitSeq(l.LogTail(20), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			fmt.Fprintf(r.stderr, "ledgerbench: %s logged: %s\n", l.Name(), line)
		}
	}
}

// stopPostgres stops the private cluster: a temporary one is deleted, one
// in --pg-dir is kept.
func (r *runner) stopPostgres(pg *devcluster.Postgres) {
	var err error
	if r.cfg.PGDir != "" {
		err = pg.Stop(context.Background())
	} else {
		err = pg.Destroy()
	}
	if err != nil {
		fmt.Fprintf(r.stderr, "ledgerbench: %v\n", err)
	}
}

// dial opens cfg.GRPCConns connections to each ledgerd of addrs.
func (r *runner) dial(addrs []string) error {
	options := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if r.cfg.Addr != "" && !r.cfg.Insecure {
		options = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}))}
	}
	if r.cfg.Token != "" {
		options = append(options, grpc.WithUnaryInterceptor(withToken(r.cfg.Token)))
	}
	for _, addr := range addrs {
		var clients []ledgerv1.LedgerServiceClient
		for range r.cfg.GRPCConns {
			conn, err := grpc.NewClient(addr, options...)
			if err != nil {
				return fmt.Errorf("connect to ledgerd at %s: %w", addr, err)
			}
			r.conns = append(r.conns, conn)
			clients = append(clients, ledgerv1.NewLedgerServiceClient(conn))
		}
		r.clients = append(r.clients, clients)
	}
	r.admin = ledgerv1.NewLedgerAdminServiceClient(r.conns[0])
	return nil
}

// withToken sends "authorization: Bearer token" with every call.
func withToken(token string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func (r *runner) onClose(f func()) { r.closers = append(r.closers, f) }

// close closes the connections and stops what the run started, last
// started first.
func (r *runner) close() {
	for _, conn := range r.conns {
		_ = conn.Close()
	}
	if r.pool != nil {
		r.pool.Close()
	}
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// describePostgres fills in the server's version and durability settings.
func describePostgres(ctx context.Context, pool *pgxpool.Pool, m *Machine) error {
	err := pool.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'),
		current_setting('synchronous_commit'), current_setting('shared_buffers'), current_setting('max_connections')`).
		Scan(&m.PostgresVersion, &m.Fsync, &m.SynchronousCommit, &m.SharedBuffers, &m.MaxConnections)
	if err != nil {
		return fmt.Errorf("read PostgreSQL's settings: %w", err)
	}
	return nil
}

// makeReadKeys completes cfg.Keys keys for replay and lookup, through
// ledgerd (or through the raw statements when the run has no ledgerd
// side), 32 at a time.
func (r *runner) makeReadKeys(ctx context.Context) error {
	keys := keySet{prefix: "keys-" + r.runID + "-", count: int64(r.cfg.Keys)}
	fmt.Fprintf(r.stderr, "ledgerbench: completing %d keys for replay and lookup\n", keys.count)
	pair, side := ledgerdPair, SideLedgerd
	if !slices.Contains(r.cfg.Sides, SideLedgerd) {
		pair, side = rawPair, SideRaw
	}
	// The session's fresh keys are the set's keys, in order.
	s := r.session(side, keys.prefix)
	m := phase{
		workers: min(32, r.cfg.Keys),
		ops:     keys.count,
		newOp:   func(worker int) Op { return pair(s, worker) },
	}.run(ctx)
	if m.errors > 0 {
		return fmt.Errorf("completing the keys for replay and lookup: %d failed, e.g. %s", m.errors, m.errorSamples[0])
	}
	r.readKeys = keys
	return nil
}

// session returns a new session on side whose own keys start with prefix.
func (r *runner) session(side, prefix string) *session {
	s := &session{cfg: r.cfg, clients: r.clients, raw: r.raw, prefix: prefix, readKeys: r.readKeys}
	if side == SideRaw {
		s.clients = nil
	}
	return s
}

// measure runs workload w on side with workers workers: a warm-up, then
// the measured phase. It reports false when the workload has no such side.
func (r *runner) measure(ctx context.Context, w Workload, side string, workers int) (RunResult, bool) {
	newOp := w.Ledgerd
	if side == SideRaw {
		newOp = w.Raw
	}
	if newOp == nil {
		return RunResult{}, false
	}
	label := fmt.Sprintf("%s %s %d workers", w.Name, side, workers)
	s := r.session(side, fmt.Sprintf("%s-%s-%s-%d-", w.Name, r.runID, side, workers))
	ops := func(worker int) Op { return newOp(s, worker) }
	if r.cfg.Warmup > 0 {
		fmt.Fprintf(r.stderr, "ledgerbench: %s: warming up for %s\n", label, r.cfg.Warmup)
		phase{workers: workers, newOp: ops, duration: r.cfg.Warmup}.run(ctx)
	}
	r.analyze(ctx)
	var before []replicaSample
	if side == SideLedgerd {
		r.resetPeaks()
		before = r.sampleReplicas(ctx, true)
	}
	pgBefore := devcluster.CPUSecondsWithChildren(r.postmaster)
	clientBefore := selfCPUSeconds()
	m := phase{
		workers: workers, newOp: ops, duration: r.cfg.Duration, ops: r.cfg.Ops, rate: r.cfg.Rate,
		progress: r.stderr, progressEvery: r.cfg.ProgressInterval, label: label,
	}.run(ctx)
	run := newRunResult(w.Name, side, workers, m)
	run.ClientCPUSeconds = selfCPUSeconds() - clientBefore
	run.PostgresCPUSeconds = devcluster.CPUSecondsWithChildren(r.postmaster) - pgBefore
	if side == SideLedgerd {
		run.Replicas = r.cfg.Replicas
		r.recordReplicas(ctx, &run, before, r.sampleReplicas(ctx, false))
	} else if backends, err := r.backendsByApplication(ctx); err == nil {
		run.PostgresBackends = backends[rawApplicationName]
	}
	fmt.Fprintf(r.stderr, "ledgerbench: %s: %.0f op/s, p50 %s ms, p99 %s ms, %d errors\n",
		label, run.OpsPerSec, ms(run.Latency.P50Micros), ms(run.Latency.P99Micros), run.Errors)
	return run, true
}

// analyze refreshes the planner's statistics of the ledger's tables before
// a measurement, as autovacuum does in a running service. A fresh ledger
// grows from nothing to tens of thousands of rows within one run, faster
// than autovacuum (one look a minute) notices, and the plans that both
// sides cache would otherwise be made for the empty tables: a sequential
// scan of entries for every batch statement, slower with every row.
func (r *runner) analyze(ctx context.Context) {
	if r.pool == nil {
		return
	}
	if _, err := r.pool.Exec(ctx, "ANALYZE entries, events"); err != nil {
		fmt.Fprintf(r.stderr, "ledgerbench: ANALYZE before the measurement: %v\n", err)
	}
}

// measurePurge times PurgeExpired, the sweeper's statement run in batches,
// over a namespace with nothing expired, then over cfg.Purge expired
// entries written for it (in SQL, as completed keys whose retention ended
// a second ago).
func (r *runner) measurePurge(ctx context.Context) (*PurgeResult, error) {
	ns := r.cfg.Namespace
	// PurgeExpired needs the namespace; a run of workloads has made it.
	_, _ = r.admin.CreateNamespace(ctx, &ledgerv1.CreateNamespaceRequest{Name: ns, Reason: "ledgerbench --purge"})
	purge := func() (int64, time.Duration, error) {
		start := time.Now()
		resp, err := r.admin.PurgeExpired(ctx, &ledgerv1.PurgeExpiredRequest{Namespace: ns, Reason: "ledgerbench --purge"})
		return resp.GetPurgedEntries(), time.Since(start), err
	}
	_, idle, err := purge()
	if err != nil {
		return nil, fmt.Errorf("idle PurgeExpired: %w", err)
	}
	prefix := "expired-" + r.runID + "-"
	fmt.Fprintf(r.stderr, "ledgerbench: writing %d expired entries to purge\n", r.cfg.Purge)
	if _, err := fill(ctx, r.pool, ns, prefix, 0, r.cfg.Purge-1, -time.Second, r.stderr); err != nil {
		return nil, err
	}
	fmt.Fprintf(r.stderr, "ledgerbench: purging them through PurgeExpired\n")
	purged, took, err := purge()
	if err != nil {
		return nil, fmt.Errorf("PurgeExpired: %w", err)
	}
	return &PurgeResult{
		IdleSeconds: idle.Seconds(), Expired: r.cfg.Purge, Purged: purged,
		Seconds: took.Seconds(), PerSec: float64(purged) / took.Seconds(),
	}, nil
}
