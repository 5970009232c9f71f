package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/ledger"
)

// Scenarios lists the scenarios Run knows, in the order it runs them:
// one per nemesis, and "mix", which injects every nemesis that runs on a
// single PostgreSQL in turn (in a random order, each at least once).
// "pg-failover" runs over a Patroni cluster of its own.
func Scenarios() []string {
	names := make([]string, 0, len(nemeses)+1)
	for _, n := range nemeses {
		names = append(names, n.name)
	}
	return append(names, "mix")
}

// Config configures Run. Zero fields take their defaults.
type Config struct {
	// Scenarios to run, by name (see Scenarios). Defaults to all of them.
	Scenarios []string
	// Cycles is how many Reserve→Complete cycles (successful Completes)
	// each scenario runs at least. Defaults to 10000.
	Cycles int
	// Faults is how many faults each scenario injects at least. Defaults to
	// 20.
	Faults int
	// FaultInterval is the quiet time before each fault, ±50%: time for
	// the service to recover, and to measure the rate before the next
	// fault. Defaults to 2s.
	FaultInterval time.Duration
	// MaxDuration bounds a scenario: it stops then even if Cycles or Faults
	// were not reached (and the report says so). Defaults to 10m.
	MaxDuration time.Duration
	// GoroutineWorkers is the number of workers in the harness's process,
	// and the number of key chains. Defaults to 16.
	GoroutineWorkers int
	// WorkerProcesses and WorkersPerProcess size the worker processes;
	// every other process is raw (bare Reserve and Complete calls).
	// Default to 4 and 4.
	WorkerProcesses   int
	WorkersPerProcess int
	// LeaseTTL is the workers' lease. Defaults to 1s.
	LeaseTTL time.Duration
	// WorkTime is how long a work takes on average. Defaults to 20ms.
	WorkTime time.Duration
	// AttemptTimeout bounds one RPC attempt. Defaults to 2s.
	AttemptTimeout time.Duration
	// DoTimeout bounds the work on one key. Defaults to 10s.
	DoTimeout time.Duration
	// Fsync keeps fsync on in the PostgreSQL cluster; without it the cluster
	// runs with fsync off but synchronous_commit on (the harness crashes
	// processes, not the machine). Defaults to false.
	Fsync bool
	// Dir holds the cluster, the binaries and the logs. Defaults to a new
	// temporary directory, removed afterwards unless KeepDir.
	Dir     string
	KeepDir bool
	// LedgerdBinary is the ledgerd to run. Defaults to one built from the
	// module (go build ./cmd/ledgerd) into Dir.
	LedgerdBinary string
	// LedgerdArgs are extra flags for every `ledgerd serve` the harness
	// starts, after its own (a flag given twice takes the last value), e.g.
	// --no-coalesce. Defaults to none.
	LedgerdArgs []string
	// WorkerCommand starts a worker process: the program and its
	// arguments, to which "--spec JSON" is added; the program must call
	// WorkerMain. Required.
	WorkerCommand []string
	// Logger receives the progress. Defaults to a logger that discards it.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios()
	}
	setDefault(&c.Cycles, 10000)
	setDefault(&c.Faults, 20)
	setDefault(&c.FaultInterval, 2*time.Second)
	setDefault(&c.MaxDuration, 10*time.Minute)
	setDefault(&c.GoroutineWorkers, 16)
	setDefault(&c.WorkerProcesses, 4)
	setDefault(&c.WorkersPerProcess, 4)
	setDefault(&c.LeaseTTL, time.Second)
	setDefault(&c.WorkTime, 20*time.Millisecond)
	setDefault(&c.AttemptTimeout, 2*time.Second)
	setDefault(&c.DoTimeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func setDefault[T comparable](p *T, value T) {
	var zero T
	if *p == zero {
		*p = value
	}
}

func (c Config) validate() error {
	for _, name := range c.Scenarios {
		if !slices.Contains(Scenarios(), name) {
			return fmt.Errorf("unknown scenario %q; the scenarios are %s", name, strings.Join(Scenarios(), ", "))
		}
	}
	if len(c.WorkerCommand) == 0 {
		return errors.New("WorkerCommand is required")
	}
	if c.Cycles < 0 || c.Faults < 0 || c.GoroutineWorkers < 1 || c.WorkerProcesses < 1 || c.WorkersPerProcess < 1 {
		return errors.New("sizes must be positive")
	}
	if c.LeaseTTL < 100*time.Millisecond {
		return fmt.Errorf("LeaseTTL must be at least 100ms, got %s", c.LeaseTTL)
	}
	return nil
}

// Run starts PostgreSQL and two ledgerd replicas behind proxies, runs the
// scenarios one after the other, checks each, and stops everything it
// started. It returns the report, whose Passed says whether every scenario
// passed; an error means the harness itself could not run.
func Run(ctx context.Context, cfg Config) (report *Report, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// One environment per kind of database: the scenarios of a kind share
	// it, and it is set up when the first of them starts.
	envs := map[bool]*env{}
	defer func() {
		for _, e := range envs {
			err = errors.Join(err, e.tearDown())
		}
	}()
	// The source as the run starts: ledgerd is built from it, and the tree
	// may change while the run goes on.
	report = &Report{Started: time.Now(), Source: sourceCommit(), Config: reportConfig(cfg), Passed: true}
	for i, name := range cfg.Scenarios {
		if ctx.Err() != nil {
			return report, ctx.Err()
		}
		ha := needsHA(name)
		if envs[ha] == nil {
			e, err := setUp(ctx, cfg, ha)
			envs[ha] = e
			if err != nil {
				return report, err
			}
		}
		cfg.Logger.Info("scenario", "name", name)
		result, err := envs[ha].runScenario(ctx, name, i)
		if err != nil {
			return report, fmt.Errorf("scenario %s: %w", name, err)
		}
		cfg.Logger.Info("scenario done", "name", name, "passed", result.Passed, "cycles", result.Cycles,
			"faults", result.Faults, "duplicates", result.Duplicates.Total, "lost", result.Lost.Total,
			"stale_accepted", result.StaleAccepted.Total, "failures", result.Failures)
		report.Scenarios = append(report.Scenarios, result)
		report.Passed = report.Passed && result.Passed
	}
	report.Finished = time.Now()
	return report, nil
}

// env is what the scenarios share: the database, the replicas and their
// proxies. The database is one PostgreSQL (pg), or a Patroni cluster (ha)
// for the scenarios that fail it over.
type env struct {
	cfg      Config
	log      *slog.Logger
	dir      string
	ownDir   bool
	pg       *devcluster.Postgres
	ha       *devcluster.HACluster
	replicas []*devcluster.Ledgerd
	proxies  []*proxy
	pool     *pgxpool.Pool // the checker's
}

func setUp(ctx context.Context, cfg Config, ha bool) (*env, error) {
	e := &env{cfg: cfg, log: cfg.Logger, dir: cfg.Dir}
	if e.dir == "" {
		dir, err := os.MkdirTemp("", "ledgerchaos")
		if err != nil {
			return e, err
		}
		e.dir, e.ownDir = dir, !cfg.KeepDir
	} else if ha {
		e.dir = filepath.Join(e.dir, "ha")
		if err := os.MkdirAll(e.dir, 0o755); err != nil {
			return e, err
		}
	}
	// The cluster belongs to the postgres user when we are root; it must
	// be able to reach its data directory.
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return e, err
	}
	binary := cfg.LedgerdBinary
	if binary == "" {
		root, err := devcluster.ModuleRoot()
		if err != nil {
			return e, err
		}
		binary = filepath.Join(e.dir, "ledgerd")
		e.log.Info("building ledgerd", "into", binary)
		if err := devcluster.BuildLedgerd(ctx, root, binary); err != nil {
			return e, err
		}
	}
	if err := e.startDatabase(ctx, ha); err != nil {
		return e, err
	}
	poolConfig, err := pgxpool.ParseConfig(e.dbURL())
	if err != nil {
		return e, err
	}
	ledger.ConfigurePool(poolConfig)
	if e.pool, err = pgxpool.NewWithConfig(ctx, poolConfig); err != nil {
		return e, err
	}
	if err := createSinkSchema(ctx, e.pool); err != nil {
		return e, err
	}
	for i := range 2 {
		name := fmt.Sprintf("ledgerd%d", i)
		// One at a time: the first applies the migrations.
		l, err := devcluster.StartLedgerd(ctx, devcluster.LedgerdConfig{
			Binary:       binary,
			DatabaseURL:  e.dbURL(),
			Args:         append(ledgerdArgs(), cfg.LedgerdArgs...),
			Name:         name,
			LogPath:      filepath.Join(e.dir, name+".log"),
			ReadyTimeout: ledgerdReadyTimeout,
			StopTimeout:  ledgerdShutdownTimeout + 5*time.Second,
		})
		if err != nil {
			return e, err
		}
		e.replicas = append(e.replicas, l)
		p, err := newProxy(l.Addr())
		if err != nil {
			return e, err
		}
		e.proxies = append(e.proxies, p)
		e.log.Info("ledgerd serving", "name", name, "addr", l.Addr(), "proxy", p.addr(), "log", l.LogPath())
	}
	return e, nil
}

// startDatabase starts the environment's PostgreSQL, or its Patroni
// cluster.
func (e *env) startDatabase(ctx context.Context, ha bool) error {
	if ha {
		// Its directory is removed by Destroy, or by its watchdog.
		e.log.Info("starting a Patroni cluster: a primary and a synchronous standby")
		cluster, err := devcluster.StartHA(ctx, devcluster.HAConfig{Fsync: e.cfg.Fsync})
		if err != nil {
			return err
		}
		e.ha = cluster
		return nil
	}
	durability := devcluster.CrashSafe
	if e.cfg.Fsync {
		durability = devcluster.Durable
	}
	e.log.Info("starting PostgreSQL", "dir", filepath.Join(e.dir, "pg"), "durability", durability)
	pgConfig := devcluster.PostgresConfig{Dir: filepath.Join(e.dir, "pg"), Durability: durability, Keep: !e.ownDir}
	if e.ownDir {
		pgConfig.OrphanDir = e.dir // if the harness dies, the watchdog removes it all
	}
	pg, err := devcluster.StartPostgres(ctx, pgConfig)
	if err != nil {
		return err
	}
	e.pg = pg
	return nil
}

// dbURL is the URL of the environment's database; over a Patroni cluster,
// the multi-host URL that follows the primary.
func (e *env) dbURL() string {
	if e.ha != nil {
		return e.ha.URL()
	}
	return e.pg.URL()
}

// tearDown stops everything setUp started, in reverse.
func (e *env) tearDown() error {
	if e == nil {
		return nil
	}
	var errs []error
	for _, p := range e.proxies {
		errs = append(errs, p.close())
	}
	for _, l := range e.replicas {
		errs = append(errs, l.Stop())
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.ha != nil {
		errs = append(errs, e.ha.Destroy())
	}
	if e.pg != nil {
		if e.ownDir {
			errs = append(errs, e.pg.Destroy())
		} else {
			errs = append(errs, e.pg.Stop(context.Background()))
		}
	}
	if e.ownDir {
		errs = append(errs, os.RemoveAll(e.dir))
	} else if e.dir != "" {
		e.log.Info("kept the harness's directory", "dir", e.dir)
	}
	return errors.Join(errs...)
}

// targets are the addresses the workers call: the proxies.
func (e *env) targets() []string {
	addrs := make([]string, len(e.proxies))
	for i, p := range e.proxies {
		addrs[i] = p.addr()
	}
	return addrs
}

// scenarioRun is one scenario while it runs.
type scenarioRun struct {
	*env
	name    string
	load    Workload
	history *History
	workers *workers // the harness's own
	procs   []*workerProcess
	restart int         // worker process restarts so far
	drains  []time.Time // when each SIGTERM of the drain nemesis was sent
}

// runScenario runs one scenario and checks it.
func (e *env) runScenario(ctx context.Context, name string, index int) (ScenarioReport, error) {
	s := &scenarioRun{
		env:     e,
		name:    name,
		history: NewHistory(),
		load: Workload{
			Namespace:      fmt.Sprintf("chaos-%d-%s-%d", index, name, time.Now().Unix()),
			LeaseTTL:       e.cfg.LeaseTTL,
			WorkTime:       e.cfg.WorkTime,
			DoTimeout:      e.cfg.DoTimeout,
			AttemptTimeout: e.cfg.AttemptTimeout,
		},
	}
	tr := &tracer{rec: s.history}
	client, err := newClient(e.targets(), tr, s.load.AttemptTimeout)
	if err != nil {
		return ScenarioReport{}, err
	}
	defer func() { _ = client.Close() }()
	sink, err := openSink(ctx, e.dbURL(), int32(e.cfg.GoroutineWorkers+4))
	if err != nil {
		return ScenarioReport{}, err
	}
	defer sink.Close()
	s.workers = &workers{client: client, sink: sink, tracer: tr, load: s.load}

	started := time.Now()
	stop, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wg sync.WaitGroup
	for i := range e.cfg.GoroutineWorkers {
		wg.Go(func() { s.workers.run(stop, workerSpec{Name: fmt.Sprintf("g%d", i), Chain: i}) })
	}
	for i := range e.cfg.WorkerProcesses {
		p := &workerProcess{name: fmt.Sprintf("p%d", i), command: e.cfg.WorkerCommand, logPath: workerLogPath(e.dir, fmt.Sprintf("p%d", i))}
		p.spec = s.processSpec(i, p.name, nil)
		if err := p.start(s.history); err != nil {
			stopWorkers()
			wg.Wait()
			s.stopProcesses()
			return ScenarioReport{}, err
		}
		s.procs = append(s.procs, p)
	}

	faults := s.injectFaults(ctx, started)

	stopWorkers()
	wg.Wait()
	s.stopProcesses()
	ended := time.Now()
	return s.check(ctx, faults, started, ended)
}

// injectFaults injects the scenario's faults until it is big enough (or
// its time is up), and returns them.
func (s *scenarioRun) injectFaults(ctx context.Context, started time.Time) []Fault {
	cycle := s.nemeses()
	rand.Shuffle(len(cycle), func(i, j int) { cycle[i], cycle[j] = cycle[j], cycle[i] })
	var faults []Fault
	for n := 0; ctx.Err() == nil; n++ {
		if s.history.Completed() >= s.cfg.Cycles && n >= s.minFaults() {
			break
		}
		if time.Since(started) > s.maxDuration() {
			s.log.Warn("scenario ran out of time", "name", s.name, "max", s.cfg.MaxDuration)
			break
		}
		interval := s.cfg.FaultInterval
		if sleep(ctx, interval/2+rand.N(interval+1)) != nil {
			break
		}
		nem := cycle[n%len(cycle)]
		f := nem.inject(ctx, s, n/len(cycle))
		s.log.Debug("fault", "scenario", s.name, "nemesis", f.Nemesis, "detail", f.Detail,
			"seconds", f.Healed.Sub(f.Start).Seconds(), "error", f.Error, "completed", s.history.Completed())
		faults = append(faults, f)
		if f.Error != "" {
			s.log.Error("fault could not be injected or healed; ending the scenario", "scenario", s.name, "error", f.Error)
			break
		}
	}
	return faults
}

// nemeses are the scenario's: its own, or for the mix every nemesis that
// runs on a single PostgreSQL.
func (s *scenarioRun) nemeses() []nemesis {
	var cycle []nemesis
	for _, n := range nemeses {
		if n.name == s.name || s.name == "mix" && !n.ha {
			cycle = append(cycle, n)
		}
	}
	return cycle
}

// minFaults is the number of faults the scenario injects at least:
// Config.Faults, of each kind of a nemesis that has several, and in a mix
// at least one of each nemesis.
func (s *scenarioRun) minFaults() int {
	if s.name == "mix" {
		return max(s.cfg.Faults, len(s.nemeses()))
	}
	return s.cfg.Faults * s.kinds()
}

// maxDuration is Config.MaxDuration, per kind of fault of the nemesis.
func (s *scenarioRun) maxDuration() time.Duration {
	return s.cfg.MaxDuration * time.Duration(s.kinds())
}

// kinds is the number of kinds of fault the scenario's nemesis injects in
// turn (1 but for pg-failover).
func (s *scenarioRun) kinds() int {
	for _, n := range nemeses {
		if n.name == s.name {
			return max(1, len(n.kinds))
		}
	}
	return 1
}

// processSpec is the spec of worker process i: workers named name.0,
// name.1, ..., spread over the chains; every other process is raw. Each
// worker starts at its chain's progress (from the history), so that a
// restarted process does not replay what its chain already did.
func (s *scenarioRun) processSpec(i int, name string, progress map[int]int) ProcessSpec {
	spec := ProcessSpec{Targets: s.targets(), DatabaseURL: s.dbURL(), Workload: s.load}
	for j := range s.cfg.WorkersPerProcess {
		chain := (i*s.cfg.WorkersPerProcess + j) % s.cfg.GoroutineWorkers
		spec.Workers = append(spec.Workers, workerSpec{
			Name:  fmt.Sprintf("%s.%d", name, j),
			Chain: chain,
			Start: progress[chain],
			Raw:   i%2 == 1,
		})
	}
	return spec
}

// restartProcess starts a new worker process in the place of process i,
// which has exited.
func (s *scenarioRun) restartProcess(i int) error {
	s.restart++
	name := fmt.Sprintf("p%dr%d", i, s.restart)
	p := &workerProcess{name: name, command: s.cfg.WorkerCommand, logPath: workerLogPath(s.dir, name)}
	p.spec = s.processSpec(i, name, s.chainProgress())
	if err := p.start(s.history); err != nil {
		return err
	}
	s.procs[i] = p
	return nil
}

// chainProgress returns the highest key index each chain has reached.
func (s *scenarioRun) chainProgress() map[int]int {
	progress := map[int]int{}
	for _, op := range s.history.Ops() {
		if chain, i, ok := parseChainKey(op.Key); ok && i > progress[chain] {
			progress[chain] = i
		}
	}
	return progress
}

// stopProcesses stops the worker processes; each finishes its key first.
func (s *scenarioRun) stopProcesses() {
	var wg sync.WaitGroup
	for _, p := range s.procs {
		wg.Go(func() { p.stop(s.load.DoTimeout + 5*time.Second) })
	}
	wg.Wait()
}
