package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The sides of a comparison: through ledgerd, or the same statements sent
// straight to PostgreSQL.
const (
	SideLedgerd = "ledgerd"
	SideRaw     = "raw"
)

// Config describes a run. Zero fields take the defaults that
// DefaultConfig shows; Validate reports a field out of its bounds by the
// name of its ledgerbench flag.
type Config struct {
	// Addr is the gRPC address of a running ledgerd to measure. Empty:
	// ledgerbench builds ./cmd/ledgerd (or runs LedgerdBin) and starts it
	// over DatabaseURL, on a free 127.0.0.1 port, in --insecure-dev mode.
	Addr string
	// Token authenticates every call to Addr ("ldg_…"); it needs Addr.
	Token string
	// Insecure connects to Addr without TLS. With TLS (the default for
	// Addr), the system's roots verify the server.
	Insecure bool
	// DatabaseURL is the PostgreSQL that ledgerd runs over: the raw side,
	// the prefill and a started ledgerd use it. Empty without Addr: a
	// private cluster is started with scripts/pg.sh (fsync on) in PGDir.
	DatabaseURL string
	// PGDir keeps the private cluster's data, so that a prefilled ledger
	// can be measured again; the cluster is stopped, not deleted, at the
	// end. Empty: a temporary directory, deleted at the end.
	PGDir string
	// LedgerdBin runs this ledgerd binary instead of building one.
	LedgerdBin string
	// LedgerdArgs are extra flags for a started `ledgerd serve`.
	LedgerdArgs []string
	// Replicas is how many ledgerd processes a run starts over the same
	// database, as a deployment of that many replicas would run: each with
	// a pool of its own of DBMaxConns connections (divide DBMaxConns to
	// keep the total the same), each on a port of its own. Worker i calls
	// replica i mod Replicas. The raw side is unaffected: it has one pool
	// of RawConns whatever the count. Defaults to 1; at most MaxReplicas;
	// more than one needs a started ledgerd (no Addr).
	Replicas int
	// DBMaxConns is each started ledgerd's --db-max-conns. Defaults to 16,
	// ledgerd's own default.
	DBMaxConns int
	// RawConns is the raw side's pool size. Defaults to DBMaxConns: the
	// same pool in front of the same number of workers as one ledgerd has.
	RawConns int
	// GRPCConns is the number of gRPC connections to each ledgerd that the
	// workers calling it share. Defaults to 4.
	GRPCConns int

	// Workloads are the workloads to run, in order (see Workloads).
	// Defaults to floor, pair, replay, lookup, contended and batch.
	Workloads []string
	// Sides are the sides each workload runs on: SideLedgerd (a started
	// ledgerd in development mode, or Addr), SideSecure (a started ledgerd
	// as platforms run it: TLS, API tokens, rate limits, over a database
	// of its own on the same PostgreSQL) and SideRaw. Defaults to ledgerd,
	// raw.
	Sides []string
	// Workers are the concurrencies to run every workload at. Defaults to
	// 32.
	Workers []int
	// Duration is how long each workload runs on each side; Ops, when
	// positive, ends it after that many operations instead (whichever
	// comes first when both are set). Defaults to 10s when Ops is 0.
	Duration time.Duration
	Ops      int64
	// Rate, when positive, paces the workers to this many operations a
	// second in all (an open loop): a latency is counted from when its
	// operation was due, not from when a worker got to it. 0 runs each
	// worker flat out (a closed loop).
	Rate int64
	// Warmup runs each workload unmeasured first. Defaults to 1s; negative
	// means none.
	Warmup time.Duration

	// Namespace holds every key of the run. Defaults to "ledgerbench".
	Namespace string
	// Keys is how many completed keys replay and lookup draw from (made
	// through ledgerd before they run), unless the ledger is prefilled:
	// then they draw from the prefilled keys. Defaults to 1000.
	Keys int
	// ContendedKeys is how many keys the contended workload's workers
	// fight over. Defaults to 8.
	ContendedKeys int
	// ContendedLeaseTTL is the lease the contended workload asks for; when
	// it runs out, the next Reserve takes the key over. Defaults to 100ms
	// (a started ledgerd allows leases from 10ms).
	ContendedLeaseTTL time.Duration
	// BatchSize is the number of keys per call of the batch workload.
	// Defaults to 100.
	BatchSize int

	// Prefill makes sure the namespace holds this many completed entries
	// (keys prefill-0000000000 …), with their two audit events each, before
	// the workloads run. They are written with generate_series in SQL,
	// as ledgerd would write them; entries already there are kept.
	Prefill int64
	// Purge measures retention at the end: that many expired entries are
	// added (in SQL), then purged through the PurgeExpired admin RPC, the
	// sweeper's own statement, and the time is reported; an idle purge
	// (nothing expired) is timed first.
	Purge int64

	// Idle, when positive, measures ledgerd at rest instead of running the
	// workloads: each started ledgerd (one per ledgerd side) is left for
	// this long, with IdleWaiters Reserves waiting, and its CPU time (from
	// /proc/PID/stat) and resident set (VmRSS, VmHWM) over the interval
	// are reported. Needs a started ledgerd (no Addr).
	Idle time.Duration
	// IdleWaiters is how many Reserves wait (wait_timeout) on keys that
	// another owner holds during Idle, each a call in flight: what a
	// fleet of workers blocked on busy keys costs ledgerd. Defaults to 0.
	IdleWaiters int

	// JSONPath, when set, receives the Report as JSON.
	JSONPath string
	// ProgressInterval is how often a progress line is printed while a
	// workload runs. Defaults to 1s.
	ProgressInterval time.Duration
}

// MaxReplicas bounds Config.Replicas (--replicas). Each replica holds up
// to DBMaxConns + 1 connections: with the default pool of 16, ten fit in
// the private cluster's max_connections of 200 beside the raw side's
// pool; more need a smaller --db-max-conns (Run warns when they may not
// fit).
const MaxReplicas = 16

// Bounds of the flags, checked by Validate.
const (
	maxWorkers        = 4096
	maxConns          = 1000
	maxGRPCConns      = 256
	maxKeys           = 10_000_000
	maxBatchSize      = 1000 // ledgerd's default Limits.MaxBatchItems
	maxPrefill        = 1_000_000_000
	maxDuration       = 24 * time.Hour
	minLeaseTTL       = time.Millisecond
	maxLeaseTTL       = time.Hour
	maxNamespaceBytes = 128
	maxIdleWaiters    = 100_000
)

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	setDefault(&c.Replicas, 1)
	setDefault(&c.DBMaxConns, 16)
	setDefault(&c.RawConns, c.DBMaxConns)
	setDefault(&c.GRPCConns, 4)
	if len(c.Workloads) == 0 {
		c.Workloads = []string{FloorWorkload, "pair", "replay", "lookup", "contended", "batch"}
	}
	if len(c.Sides) == 0 {
		c.Sides = []string{SideLedgerd, SideRaw}
	}
	if len(c.Workers) == 0 {
		c.Workers = []int{32}
	}
	if c.Ops == 0 {
		setDefault(&c.Duration, 10*time.Second)
	}
	setDefault(&c.Warmup, time.Second)
	setDefault(&c.Namespace, "ledgerbench")
	setDefault(&c.Keys, 1000)
	setDefault(&c.ContendedKeys, 8)
	setDefault(&c.ContendedLeaseTTL, 100*time.Millisecond)
	setDefault(&c.BatchSize, 1000)
	setDefault(&c.ProgressInterval, time.Second)
	return c
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// Validate reports the first field out of its bounds, naming its flag and
// the bound.
func (c Config) Validate() error {
	c = c.withDefaults()
	for _, name := range c.Workloads {
		_, ok := workloadByName(name)
		if !ok {
			return fmt.Errorf("--workloads: unknown workload %q (known: %s)", name, strings.Join(workloadNames(), ", "))
		}
	}
	for _, side := range c.Sides {
		if side != SideLedgerd && side != SideSecure && side != SideRaw {
			return fmt.Errorf("--sides: unknown side %q (known: %s, %s, %s)", side, SideLedgerd, SideSecure, SideRaw)
		}
	}
	for _, n := range c.Workers {
		if err := between("--workers", n, 1, maxWorkers); err != nil {
			return err
		}
	}
	checks := []error{
		between("--replicas", c.Replicas, 1, MaxReplicas),
		between("--db-max-conns", c.DBMaxConns, 1, maxConns),
		between("--raw-conns", c.RawConns, 1, maxConns),
		between("--grpc-conns", c.GRPCConns, 1, maxGRPCConns),
		between("--keys", c.Keys, 1, maxKeys),
		between("--contended-keys", c.ContendedKeys, 1, maxKeys),
		between("--batch-size", c.BatchSize, 1, maxBatchSize),
		between("--prefill", c.Prefill, 0, maxPrefill),
		between("--purge", c.Purge, 0, maxPrefill),
		between("--ops", c.Ops, 0, 1<<40),
		between("--rate", c.Rate, 0, 10_000_000),
		between("--duration", c.Duration, 0, maxDuration),
		between("--warmup", max(c.Warmup, 0), 0, maxDuration),
		between("--contended-lease-ttl", c.ContendedLeaseTTL, minLeaseTTL, maxLeaseTTL),
		between("--idle", c.Idle, 0, maxDuration),
		between("--idle-waiters", c.IdleWaiters, 0, maxIdleWaiters),
	}
	if len(c.Namespace) > maxNamespaceBytes {
		return fmt.Errorf("--namespace must be at most %d bytes, got %d", maxNamespaceBytes, len(c.Namespace))
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	switch {
	case c.Addr == "" && c.Token != "":
		return fmt.Errorf("--token needs --addr: a started ledgerd serves without authentication (--insecure-dev)")
	case c.Addr == "" && c.Insecure:
		return fmt.Errorf("--insecure needs --addr: a started ledgerd is always reached over plaintext loopback")
	case c.Addr != "" && c.LedgerdBin != "":
		return fmt.Errorf("--ledgerd-bin starts a ledgerd, so it cannot go with --addr")
	case c.Addr != "" && len(c.LedgerdArgs) > 0:
		return fmt.Errorf("--ledgerd-flag is for a started ledgerd, so it cannot go with --addr")
	case c.Addr != "" && c.Replicas > 1:
		return fmt.Errorf("--replicas starts that many ledgerd processes, so it cannot go with --addr")
	case slices.ContainsFunc(c.LedgerdArgs, isHTTPAddrFlag):
		return fmt.Errorf("--ledgerd-flag cannot set --http-addr: ledgerbench gives each started ledgerd a loopback HTTP port to read its /metrics")
	case c.Addr != "" && c.DatabaseURL == "" && slices.Contains(c.Sides, SideRaw):
		return fmt.Errorf("--database-url is needed with --addr for the raw side (or --sides %s)", SideLedgerd)
	case c.Addr != "" && c.DatabaseURL == "" && (c.Prefill > 0 || c.Purge > 0):
		return fmt.Errorf("--database-url is needed with --addr for --prefill and --purge: they write in SQL")
	case c.DatabaseURL != "" && c.PGDir != "":
		return fmt.Errorf("--pg-dir starts a private PostgreSQL, so it cannot go with --database-url")
	case c.Addr != "" && c.PGDir != "":
		return fmt.Errorf("--pg-dir starts a private PostgreSQL for a started ledgerd, so it cannot go with --addr")
	case c.Addr != "" && slices.Contains(c.Sides, SideSecure):
		return fmt.Errorf("--secure starts a ledgerd with TLS and tokens, so it cannot go with --addr (measure a secure ledgerd of yours with --addr and --token-file)")
	case c.Addr != "" && c.Idle > 0:
		return fmt.Errorf("--idle reads the CPU time and memory of a ledgerd it starts, so it cannot go with --addr")
	case c.IdleWaiters > 0 && c.Idle == 0:
		return fmt.Errorf("--idle-waiters needs --idle: the waiters are held for that long")
	case c.ProgressInterval < 0:
		return fmt.Errorf("progress interval must not be negative, got %s", c.ProgressInterval)
	}
	return nil
}

// isHTTPAddrFlag tells whether a `ledgerd serve` argument sets --http-addr.
func isHTTPAddrFlag(arg string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return strings.HasPrefix(arg, "-") && name == "http-addr"
}

// between reports value outside [low, high], naming the flag and the bounds.
func between[T int | int64 | time.Duration](flagName string, value, low, high T) error {
	if value < low || value > high {
		return fmt.Errorf("%s must be between %v and %v, got %v", flagName, low, high, value)
	}
	return nil
}
