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
	// fleets are the ledgerd sides' processes and clients, by side.
	fleets map[string]*fleet
	admin  ledgerv1.LedgerAdminServiceClient
	pool   *pgxpool.Pool // nil without a database
	// securePool is the secure side's database's (--secure); nil otherwise.
	securePool    *pgxpool.Pool
	raw           *rawDB
	http          *http.Client // reads the replicas' /metrics
	httpTransport *http.Transport
	readKeys      keySet // the completed keys of the raw side's database
	peakRSS       int64
	postmaster    int // the postmaster of a cluster on this machine, for its CPU time; 0 otherwise
	// privatePG is the private cluster ledgerbench started; nil with
	// --database-url or --addr.
	privatePG *devcluster.Postgres
	closers   []func()
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
	r := &runner{cfg: cfg, stdout: stdout, stderr: stderr, runID: strings.ToLower(rand.Text()[:8]), fleets: map[string]*fleet{},
		// No idle connections: nothing of the client outlives the run.
		httpTransport: &http.Transport{DisableKeepAlives: true}}
	r.http = &http.Client{Transport: r.httpTransport}
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
		if f := r.fleets[SideSecure]; f != nil {
			fmt.Fprintf(stderr, "ledgerbench: prefilling %d entries in the secure side's database\n", cfg.Prefill)
			if _, err := prefill(ctx, f.pool, cfg.Namespace, cfg.Prefill, stderr); err != nil {
				return nil, err
			}
			f.readKeys = r.readKeys
		}
	}
	if cfg.Idle > 0 {
		return r.idle(ctx, report)
	}
	for _, workers := range cfg.Workers {
		for _, name := range cfg.Workloads {
			w, _ := workloadByName(name)
			for _, side := range cfg.Sides {
				if w.readKeys {
					if err := r.ensureReadKeys(ctx, side); err != nil {
						return nil, err
					}
				}
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
	report.SecureCosts = secureCosts(report.Runs)
	report.Machine.LoadAverage[1] = loadAverage()
	if cfg.Purge > 0 {
		p, err := r.measurePurge(ctx)
		if err != nil {
			return nil, err
		}
		report.Purge = p
	}
	return r.finish(report)
}

// finish records the run's peak RSS, prints the report and writes its
// JSON if asked.
func (r *runner) finish(report *Report) (*Report, error) {
	r.notePeaks()
	report.LedgerdPeakRSSBytes = r.peakRSS
	report.Print(r.stdout)
	if r.cfg.JSONPath != "" {
		if err := report.WriteJSON(r.cfg.JSONPath); err != nil {
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
		r.privatePG = pg
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
		options := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}))}
		if cfg.Insecure {
			options = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		}
		if cfg.Token != "" {
			options = append(options, grpc.WithUnaryInterceptor(withToken(cfg.Token)))
		}
		f, err := r.dial(SideLedgerd, []string{cfg.Addr}, options...)
		if err != nil {
			return err
		}
		f.pool = r.pool
		r.fleets[SideLedgerd] = f
		r.admin = ledgerv1.NewLedgerAdminServiceClient(r.conns[0])
		return nil
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
	// The ledgerd side's fleet is started whatever the sides: the keys of
	// replay and lookup are made, and --purge runs, through it.
	replicas, err := r.startReplicas(ctx, SideLedgerd, bin, databaseURL, dir, func(httpAddr string) []string {
		return append(ledgerdArgs(cfg.DBMaxConns, httpAddr), idleLedgerdArgs(cfg)...)
	}, nil)
	if err != nil {
		return err
	}
	f, err := r.dial(SideLedgerd, addrsOf(replicas), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	f.replicas, f.pool = replicas, r.pool
	r.fleets[SideLedgerd] = f
	r.admin = ledgerv1.NewLedgerAdminServiceClient(r.conns[0])
	if slices.Contains(cfg.Sides, SideSecure) {
		return r.setUpSecure(ctx, bin, databaseURL, dir, report)
	}
	return nil
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
	for _, pool := range []*pgxpool.Pool{r.pool, r.securePool} {
		if pool != nil {
			pool.Close()
		}
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

// ensureReadKeys makes the completed keys that replay and lookup read on
// side, unless its database has them (made, or prefilled).
func (r *runner) ensureReadKeys(ctx context.Context, side string) error {
	if side == SideSecure {
		f := r.fleets[SideSecure]
		if f.readKeys.count > 0 {
			return nil
		}
		keys, err := r.makeReadKeys(ctx, f, SideSecure)
		f.readKeys = keys
		return err
	}
	if r.readKeys.count > 0 {
		return nil
	}
	// Through ledgerd, or through the raw statements when the run has no
	// ledgerd side.
	makeSide := SideLedgerd
	if !slices.Contains(r.cfg.Sides, SideLedgerd) {
		makeSide = SideRaw
	}
	keys, err := r.makeReadKeys(ctx, r.fleets[SideLedgerd], makeSide)
	r.readKeys = keys
	if f := r.fleets[SideLedgerd]; f != nil {
		f.readKeys = keys
	}
	return err
}

// makeReadKeys completes cfg.Keys keys for replay and lookup on side (f's
// ledgerd, or the raw statements), 32 at a time.
func (r *runner) makeReadKeys(ctx context.Context, f *fleet, side string) (keySet, error) {
	keys := keySet{prefix: "keys-" + r.runID + "-", count: int64(r.cfg.Keys)}
	fmt.Fprintf(r.stderr, "ledgerbench: completing %d keys for replay and lookup (%s)\n", keys.count, side)
	pair := ledgerdPair
	if side == SideRaw {
		pair = rawPair
	}
	// The session's fresh keys are the set's keys, in order.
	s := r.session(f, keys.prefix)
	m := phase{
		workers: min(32, r.cfg.Keys),
		ops:     keys.count,
		newOp:   func(worker int) Op { return pair(s, worker) },
	}.run(ctx)
	if m.errors > 0 {
		return keySet{}, fmt.Errorf("completing the keys for replay and lookup: %d failed, e.g. %s", m.errors, m.errorSamples[0])
	}
	return keys, nil
}

// session returns a new session whose own keys start with prefix, calling
// f's ledgerd (nil: the raw side).
func (r *runner) session(f *fleet, prefix string) *session {
	s := &session{cfg: r.cfg, raw: r.raw, prefix: prefix, readKeys: r.readKeys}
	if f != nil {
		s.clients, s.health = f.clients, f.health
		if f.readKeys.count > 0 {
			s.readKeys = f.readKeys
		}
	}
	return s
}

// measure runs workload w on side with workers workers: a warm-up, then
// the measured phase. It reports false when the workload has no such side.
func (r *runner) measure(ctx context.Context, w Workload, side string, workers int) (RunResult, bool) {
	newOp, f := w.Ledgerd, r.fleets[side]
	if side == SideRaw {
		newOp, f = w.Raw, nil
	}
	if newOp == nil {
		return RunResult{}, false
	}
	label := fmt.Sprintf("%s %s %d workers", w.Name, side, workers)
	s := r.session(f, fmt.Sprintf("%s-%s-%s-%d-", w.Name, r.runID, side, workers))
	ops := func(worker int) Op { return newOp(s, worker) }
	if r.cfg.Warmup > 0 {
		fmt.Fprintf(r.stderr, "ledgerbench: %s: warming up for %s\n", label, r.cfg.Warmup)
		phase{workers: workers, newOp: ops, duration: r.cfg.Warmup}.run(ctx)
	}
	r.analyze(ctx, f)
	var before []replicaSample
	if f != nil {
		r.resetPeaks(f)
		before = r.sampleReplicas(ctx, f, true)
	}
	pgBefore := devcluster.CPUSecondsWithChildren(r.postmaster)
	clientBefore := selfCPUSeconds()
	m := phase{
		workers: workers, newOp: ops, duration: r.cfg.Duration, ops: r.cfg.Ops, rate: r.cfg.Rate,
		progress: r.stderr, progressEvery: r.cfg.ProgressInterval, label: label,
	}.run(ctx)
	run := newRunResult(w.Name, side, workers, m)
	run.CallsPerOp = w.calls()
	run.ClientCPUSeconds = selfCPUSeconds() - clientBefore
	run.PostgresCPUSeconds = devcluster.CPUSecondsWithChildren(r.postmaster) - pgBefore
	if f != nil {
		run.Replicas = r.cfg.Replicas
		r.recordReplicas(ctx, &run, f, before, r.sampleReplicas(ctx, f, false))
	} else if backends, err := backendsByApplication(ctx, r.pool); err == nil {
		run.PostgresBackends = backends[rawApplicationName]
	}
	fmt.Fprintf(r.stderr, "ledgerbench: %s: %.0f op/s, p50 %s ms, p99 %s ms, %d errors\n",
		label, run.OpsPerSec, ms(run.Latency.P50Micros), ms(run.Latency.P99Micros), run.Errors)
	return run, true
}

// analyze refreshes the planner's statistics of the ledger's tables (f's
// database's, or the raw side's when f is nil) before
// a measurement, as autovacuum does in a running service. A fresh ledger
// grows from nothing to tens of thousands of rows within one run, faster
// than autovacuum (one look a minute) notices, and the plans that both
// sides cache would otherwise be made for the empty tables: a sequential
// scan of entries for every batch statement, slower with every row.
func (r *runner) analyze(ctx context.Context, f *fleet) {
	pool := r.pool
	if f != nil && f.pool != nil {
		pool = f.pool
	}
	if pool == nil {
		return
	}
	if _, err := pool.Exec(ctx, "ANALYZE entries, events"); err != nil {
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
