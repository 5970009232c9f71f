package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the result of a run, as ledgerbench writes it with --json.
type Report struct {
	StartedAt time.Time `json:"started_at"`
	// Command is ledgerbench's command line.
	Command  []string `json:"command"`
	Machine  Machine  `json:"machine"`
	Settings Settings `json:"settings"`
	// Prefill is what --prefill did, if it was given.
	Prefill *PrefillResult `json:"prefill,omitempty"`
	// Runs has one entry per workload, side and concurrency, in run order.
	Runs []RunResult `json:"runs"`
	// Ratios compares each ledgerd side of each workload and concurrency
	// with the raw side, above the floor.
	Ratios []Ratio `json:"ratios"`
	// Security is what the secure side was configured with and what was
	// checked of it (--secure only).
	Security *Security `json:"security,omitempty"`
	// SecureCosts compares the secure side with the ledgerd side, by
	// workload and concurrency (--secure with both sides).
	SecureCosts []SecureCost `json:"secure_costs,omitempty"`
	// Idle is what --idle measured, one entry per started ledgerd side.
	Idle []IdleResult `json:"idle,omitempty"`
	// Purge is what --purge measured, if it was given.
	Purge *PurgeResult `json:"purge,omitempty"`
	// LedgerdPeakRSSBytes is the largest peak resident set (VmHWM) of a
	// started ledgerd over the whole run; 0 when ledgerbench did not start
	// one.
	LedgerdPeakRSSBytes int64 `json:"ledgerd_peak_rss_bytes,omitempty"`
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs        int    `json:"cpus"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	GoVersion   string `json:"go_version"`
	OS          string `json:"os"`
	// The PostgreSQL server and the settings that decide durability.
	PostgresVersion   string `json:"postgres_version,omitempty"`
	Fsync             string `json:"fsync,omitempty"`
	SynchronousCommit string `json:"synchronous_commit,omitempty"`
	SharedBuffers     string `json:"shared_buffers,omitempty"`
	// MaxConnections is PostgreSQL's max_connections: what the replicas'
	// pools and the raw side's share.
	MaxConnections string `json:"max_connections,omitempty"`
	// LoadAverage is the 1-minute load average when the run started and
	// when it ended: on a shared machine, a sign of other work.
	LoadAverage [2]float64 `json:"load_average"`
}

// Durable reports whether the database acknowledged commits only once they
// were flushed (fsync and synchronous_commit on): only then are the write
// figures honest.
func (m Machine) Durable() bool { return m.Fsync == "on" && m.SynchronousCommit == "on" }

// Settings are the knobs of the run that shape its figures.
type Settings struct {
	Ledgerd     string   `json:"ledgerd"` // "started" or the address
	LedgerdArgs []string `json:"ledgerd_args,omitempty"`
	// Replicas is the number of ledgerd processes the run started (1 with
	// an address), each with a pool of DBMaxConns connections.
	Replicas          int    `json:"replicas"`
	DBMaxConns        int    `json:"db_max_conns"`
	RawConns          int    `json:"raw_conns"`
	GRPCConns         int    `json:"grpc_conns"`
	Duration          string `json:"duration,omitempty"`
	Ops               int64  `json:"ops,omitempty"`
	Rate              int64  `json:"rate,omitempty"`
	Warmup            string `json:"warmup"`
	Namespace         string `json:"namespace"`
	Keys              int    `json:"keys"`
	ContendedKeys     int    `json:"contended_keys"`
	ContendedLeaseTTL string `json:"contended_lease_ttl"`
	BatchSize         int    `json:"batch_size"`
	Prefill           int64  `json:"prefill"`
}

func settingsOf(c Config) Settings {
	s := Settings{
		Ledgerd: "started", LedgerdArgs: c.LedgerdArgs, Replicas: c.Replicas,
		DBMaxConns: c.DBMaxConns, RawConns: c.RawConns, GRPCConns: c.GRPCConns,
		Ops: c.Ops, Rate: c.Rate, Warmup: max(c.Warmup, 0).String(), Namespace: c.Namespace,
		Keys: c.Keys, ContendedKeys: c.ContendedKeys, ContendedLeaseTTL: c.ContendedLeaseTTL.String(),
		BatchSize: c.BatchSize, Prefill: c.Prefill,
	}
	if c.Addr != "" {
		s.Ledgerd = c.Addr
	}
	if c.Duration > 0 {
		s.Duration = c.Duration.String()
	}
	return s
}

// RunResult is one workload on one side at one concurrency.
type RunResult struct {
	Workload string `json:"workload"`
	Side     string `json:"side"`
	// Replicas is the number of ledgerd processes the workers' calls were
	// spread over (ledgerd side only; the raw side has no ledgerd).
	Replicas int `json:"replicas,omitempty"`
	Workers  int `json:"workers"`
	// CallsPerOp is the number of RPCs one operation makes (2 for pair and
	// batch, 1 otherwise).
	CallsPerOp int     `json:"calls_per_op,omitempty"`
	Seconds    float64 `json:"seconds"`
	Ops        int64   `json:"ops"`
	// Items counts keys: more than Ops for batch operations.
	Items       int64   `json:"items"`
	Errors      int64   `json:"errors"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	ItemsPerSec float64 `json:"items_per_sec"`
	// Latency is the distribution of one operation's latency (a pair's
	// is its Reserve and its Complete together).
	Latency      Latency          `json:"latency"`
	Outcomes     map[string]int64 `json:"outcomes,omitempty"`
	ErrorSamples []string         `json:"error_samples,omitempty"`
	// Aborted is set when the run stopped early because most operations
	// failed.
	Aborted bool `json:"aborted,omitempty"`
	// LedgerdPeakRSSBytes is the largest peak resident set of a started
	// ledgerd during this run (ledgerd side only; each one's is in
	// ReplicaResults).
	LedgerdPeakRSSBytes int64 `json:"ledgerd_peak_rss_bytes,omitempty"`
	// LedgerdCPUSeconds is the CPU time the started ledgerd processes used
	// during this run, all together (ledgerd side only).
	LedgerdCPUSeconds float64 `json:"ledgerd_cpu_seconds,omitempty"`
	// ClientCPUSeconds is the CPU time ledgerbench itself used: on a small
	// machine the load generator competes for the same cores.
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// PostgresCPUSeconds is the CPU time PostgreSQL's
	// processes used during this run: the private cluster's, or a
	// --database-url one's on this machine (zero for one elsewhere).
	PostgresCPUSeconds float64 `json:"postgres_cpu_seconds,omitempty"`
	// PostgresBackends is the number of PostgreSQL sessions the side's
	// clients held at the end of the run: the started ledgerd processes'
	// (their pools and LISTEN connections) on the ledgerd side, the raw
	// pool's on the raw side. Pools keep what they opened, so this is at
	// least the most the run used at once. 0 when it was not counted.
	PostgresBackends int `json:"postgres_backends,omitempty"`
	// Coalesced is what the started ledgerd processes' coalescers did
	// during this run, all together, by kind (reserve, complete, lookup):
	// read from their /metrics (ledgerd side only).
	Coalesced map[string]Coalesced `json:"coalesced,omitempty"`
	// ReplicaResults has one entry per started ledgerd (ledgerd side only).
	ReplicaResults []ReplicaResult `json:"replica_results,omitempty"`
}

// ReplicaResult is one started ledgerd's part in a ledgerd-side run.
type ReplicaResult struct {
	// Replica numbers the process, from 1; worker i called replica
	// i mod Replicas + 1.
	Replica int `json:"replica"`
	// Calls is the number of RPCs it answered during the run
	// (grpc_server_handled_total).
	Calls        int64   `json:"calls"`
	PeakRSSBytes int64   `json:"peak_rss_bytes,omitempty"`
	CPUSeconds   float64 `json:"cpu_seconds,omitempty"`
	// PostgresBackends is the number of its PostgreSQL sessions at the end
	// of the run.
	PostgresBackends int `json:"postgres_backends,omitempty"`
	// Coalesced is what its coalescer did, by kind.
	Coalesced map[string]Coalesced `json:"coalesced,omitempty"`
}

// Coalesced is what coalescing did with the singleton calls of one kind:
// the calls, and the statements that carried them.
type Coalesced struct {
	Calls      int64 `json:"calls"`
	Statements int64 `json:"statements"`
	// MeanGroup is Calls / Statements: the calls one statement carried, on
	// average (ledgerd_coalesced_calls_total over
	// ledgerd_coalesced_statements_total).
	MeanGroup float64 `json:"mean_group"`
}

func newCoalesced(calls, statements int64) Coalesced {
	c := Coalesced{Calls: calls, Statements: statements}
	if statements > 0 {
		c.MeanGroup = float64(calls) / float64(statements)
	}
	return c
}

func (c Coalesced) add(other Coalesced) Coalesced {
	return newCoalesced(c.Calls+other.Calls, c.Statements+other.Statements)
}

func newRunResult(workload, side string, workers int, m measurement) RunResult {
	r := RunResult{
		Workload: workload, Side: side, Workers: workers,
		Seconds: m.elapsed.Seconds(), Ops: m.ops, Items: m.items, Errors: m.errors,
		Latency: m.histogram.Latency(), Outcomes: m.outcomesCopy(), ErrorSamples: m.errorSamples, Aborted: m.aborted,
	}
	if m.elapsed > 0 {
		r.OpsPerSec = float64(m.ops) / m.elapsed.Seconds()
		r.ItemsPerSec = float64(m.items) / m.elapsed.Seconds()
	}
	return r
}

// Ratio compares a ledgerd side with the raw statements for one workload
// at one concurrency, in keys per second, and shows the transport floor
// beside them.
type Ratio struct {
	Workload string `json:"workload"`
	// Side is the ledgerd side: ledgerd, or secure.
	Side string `json:"side"`
	// Replicas is the number of ledgerd processes of the ledgerd side.
	Replicas      int     `json:"replicas"`
	Workers       int     `json:"workers"`
	LedgerdPerSec float64 `json:"ledgerd_per_sec"`
	RawPerSec     float64 `json:"raw_per_sec"`
	// Ratio is LedgerdPerSec / RawPerSec.
	Ratio         float64 `json:"ratio"`
	LedgerdP50Us  int64   `json:"ledgerd_p50_us"`
	LedgerdP99Us  int64   `json:"ledgerd_p99_us"`
	RawP50Us      int64   `json:"raw_p50_us"`
	RawP99Us      int64   `json:"raw_p99_us"`
	LedgerdRSSMiB float64 `json:"ledgerd_rss_mib,omitempty"`
	// FloorP50Us is the p50 of the floor workload (one health Check) on
	// the same side at the same concurrency, in the same run; absent
	// without a floor run.
	FloorP50Us *int64 `json:"floor_p50_us,omitempty"`
	// CallsPerOp is the number of RPCs, each paying the floor, of one
	// operation.
	CallsPerOp int `json:"calls_per_op"`
	// OverheadP50Us is what ledgerd adds to an operation above the
	// database and the transport: LedgerdP50Us − RawP50Us − CallsPerOp ×
	// FloorP50Us. Absent without a floor run.
	OverheadP50Us *int64 `json:"overhead_p50_us,omitempty"`
}

// SecureCost compares the secure side with the ledgerd side (development
// mode) for one workload at one concurrency in the same run: what TLS,
// tokens and rate limits cost.
type SecureCost struct {
	Workload       string  `json:"workload"`
	Workers        int     `json:"workers"`
	InsecurePerSec float64 `json:"insecure_per_sec"`
	SecurePerSec   float64 `json:"secure_per_sec"`
	// Ratio is SecurePerSec / InsecurePerSec.
	Ratio         float64 `json:"ratio"`
	InsecureP50Us int64   `json:"insecure_p50_us"`
	SecureP50Us   int64   `json:"secure_p50_us"`
	// P50DiffUs is SecureP50Us − InsecureP50Us, and P50DiffPerCallUs that
	// over the operation's calls.
	P50DiffUs        int64 `json:"p50_diff_us"`
	P50DiffPerCallUs int64 `json:"p50_diff_per_call_us"`
}

// secureCosts pairs each secure run with the ledgerd run of the same
// workload and concurrency.
func secureCosts(runs []RunResult) []SecureCost {
	var out []SecureCost
	for _, sec := range runs {
		if sec.Side != SideSecure {
			continue
		}
		i := slices.IndexFunc(runs, func(r RunResult) bool {
			return r.Side == SideLedgerd && r.Workload == sec.Workload && r.Workers == sec.Workers
		})
		if i < 0 {
			continue
		}
		dev := runs[i]
		c := SecureCost{
			Workload: sec.Workload, Workers: sec.Workers,
			InsecurePerSec: dev.ItemsPerSec, SecurePerSec: sec.ItemsPerSec,
			InsecureP50Us: dev.Latency.P50Micros, SecureP50Us: sec.Latency.P50Micros,
			P50DiffUs: sec.Latency.P50Micros - dev.Latency.P50Micros,
		}
		c.P50DiffPerCallUs = c.P50DiffUs / int64(max(sec.CallsPerOp, 1))
		if dev.ItemsPerSec > 0 {
			c.Ratio = sec.ItemsPerSec / dev.ItemsPerSec
		}
		out = append(out, c)
	}
	return out
}

// ratios pairs each run of a ledgerd side with the raw run of the same
// workload and concurrency, in the order of the ledgerd runs, with the
// floor run of its side and concurrency.
func ratios(runs []RunResult) []Ratio {
	type id struct {
		workload, side string
		workers        int
	}
	byID := map[id]RunResult{}
	for _, r := range runs {
		byID[id{r.Workload, r.Side, r.Workers}] = r
	}
	var out []Ratio
	for _, l := range runs {
		r, ok := byID[id{l.Workload, SideRaw, l.Workers}]
		if l.Side == SideRaw || !ok {
			continue
		}
		ratio := Ratio{
			Workload: l.Workload, Side: l.Side, Replicas: l.Replicas, Workers: l.Workers, CallsPerOp: max(l.CallsPerOp, 1),
			LedgerdPerSec: l.ItemsPerSec, RawPerSec: r.ItemsPerSec,
			LedgerdP50Us: l.Latency.P50Micros, LedgerdP99Us: l.Latency.P99Micros,
			RawP50Us: r.Latency.P50Micros, RawP99Us: r.Latency.P99Micros,
			LedgerdRSSMiB: mib(l.LedgerdPeakRSSBytes),
		}
		if r.ItemsPerSec > 0 {
			ratio.Ratio = l.ItemsPerSec / r.ItemsPerSec
		}
		if floor, ok := byID[id{FloorWorkload, l.Side, l.Workers}]; ok && floor.Ops > 0 {
			floorP50 := floor.Latency.P50Micros
			overhead := l.Latency.P50Micros - r.Latency.P50Micros - int64(ratio.CallsPerOp)*floorP50
			ratio.FloorP50Us, ratio.OverheadP50Us = &floorP50, &overhead
		}
		out = append(out, ratio)
	}
	return out
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// PrefillResult is what --prefill did.
type PrefillResult struct {
	// Entries is the number of prefilled entries the ledger holds.
	Entries int64 `json:"entries"`
	// Inserted is how many of them this run wrote (with 2 events each).
	Inserted int64   `json:"inserted"`
	Seconds  float64 `json:"seconds"`
	// EntriesTotal and EventsTotal count the whole tables afterwards
	// (estimates from the planner's statistics).
	EntriesTotal int64 `json:"entries_total"`
	EventsTotal  int64 `json:"events_total"`
	// DatabaseBytes is the size of the database afterwards.
	DatabaseBytes int64 `json:"database_bytes"`
}

// PurgeResult is what --purge measured: PurgeExpired, the sweeper's own
// statement in batches, first with nothing expired, then over Expired
// entries.
type PurgeResult struct {
	IdleSeconds float64 `json:"idle_seconds"`
	Expired     int64   `json:"expired"`
	Purged      int64   `json:"purged"`
	Seconds     float64 `json:"seconds"`
	PerSec      float64 `json:"per_sec"`
}

// WriteJSON writes r to path, indented.
func (r *Report) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Print writes the human-readable report: every run, then the ratio
// table, the prefill and purge figures.
func (r *Report) Print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\nmachine: %d CPUs, %.1f GiB, %s, %s", m.CPUs, float64(m.MemoryBytes)/(1<<30), m.OS, m.GoVersion)
	if m.PostgresVersion != "" {
		fmt.Fprintf(w, "; PostgreSQL %s, fsync=%s, synchronous_commit=%s, shared_buffers=%s", m.PostgresVersion, m.Fsync, m.SynchronousCommit, m.SharedBuffers)
		if m.MaxConnections != "" {
			fmt.Fprintf(w, ", max_connections=%s", m.MaxConnections)
		}
		if !m.Durable() {
			fmt.Fprint(w, " (NOT DURABLE: write figures are not honest)")
		}
	}
	fmt.Fprintf(w, "; load average %.1f at the start, %.1f at the end\n", m.LoadAverage[0], m.LoadAverage[1])
	if r.Prefill != nil {
		p := r.Prefill
		fmt.Fprintf(w, "prefill: %d entries (%d inserted in %.1fs); tables ≈%d entries, ≈%d events; database %.1f GiB\n",
			p.Entries, p.Inserted, p.Seconds, p.EntriesTotal, p.EventsTotal, float64(p.DatabaseBytes)/(1<<30))
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tside\treplicas\tworkers\tops/s\tkeys/s\tp50 ms\tp95 ms\tp99 ms\tp99.9 ms\tmax ms\terrors\tRSS MiB\tCPU µs/op: ledgerd\tpg\tclient\toutcomes\t")
	for _, run := range r.Runs {
		perOp := func(seconds float64) string {
			if seconds <= 0 || run.Ops == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f", seconds/float64(run.Ops)*1e6)
		}
		rss := "-"
		if run.LedgerdPeakRSSBytes > 0 {
			rss = fmt.Sprintf("%.0f", mib(run.LedgerdPeakRSSBytes))
		}
		errs := fmt.Sprint(run.Errors)
		if run.Aborted {
			errs += " (aborted)"
		}
		l := run.Latency
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			run.Workload, run.Side, count(run.Replicas), run.Workers, run.OpsPerSec, run.ItemsPerSec,
			ms(l.P50Micros), ms(l.P95Micros), ms(l.P99Micros), ms(l.P999Micros), ms(l.MaxMicros),
			errs, rss, perOp(run.LedgerdCPUSeconds), perOp(run.PostgresCPUSeconds), perOp(run.ClientCPUSeconds),
			outcomes(run.Outcomes))
	}
	_ = tw.Flush()
	for _, run := range r.Runs {
		for _, sample := range run.ErrorSamples {
			fmt.Fprintf(w, "  %s %s error: %s\n", run.Workload, run.Side, sample)
		}
	}

	r.printReplicas(w)

	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nledgerd / raw (keys/s; latency p50/p99 in ms; floor: p50 of one health Check, same side and workers, in µs;")
		fmt.Fprintln(w, "overhead: ledgerd p50 − raw p50 − calls × floor p50, in µs):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "workload\tside\treplicas\tworkers\tledgerd/s\traw/s\tledgerd/raw\tledgerd p50/p99\traw p50/p99\tcalls\tfloor p50\toverhead\t")
		for _, q := range r.Ratios {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%.0f\t%.2f\t%s / %s\t%s / %s\t%d\t%s\t%s\t\n", q.Workload, q.Side, count(q.Replicas), q.Workers,
				q.LedgerdPerSec, q.RawPerSec, q.Ratio, ms(q.LedgerdP50Us), ms(q.LedgerdP99Us), ms(q.RawP50Us), ms(q.RawP99Us),
				q.CallsPerOp, micros(q.FloorP50Us), micros(q.OverheadP50Us))
		}
		_ = tw.Flush()
	}
	r.printSecurity(w)
	r.printIdle(w)
	if r.Purge != nil {
		p := r.Purge
		fmt.Fprintf(w, "\npurge (PurgeExpired, the sweeper's statement): idle pass %.3fs; %d expired entries purged in %.1fs (%.0f/s)\n",
			p.IdleSeconds, p.Purged, p.Seconds, p.PerSec)
	}
	if r.LedgerdPeakRSSBytes > 0 {
		fmt.Fprintf(w, "ledgerd peak RSS over the run: %.1f MiB\n", mib(r.LedgerdPeakRSSBytes))
	}
}

// printReplicas writes, for every ledgerd-side run of started ledgerd
// processes, what each process did, and their sum when there are several:
// the calls it answered, its peak RSS, its CPU time, its PostgreSQL
// sessions and its coalesced calls per statement by kind.
func (r *Report) printReplicas(w io.Writer) {
	if !slices.ContainsFunc(r.Runs, func(run RunResult) bool { return len(run.ReplicaResults) > 0 }) {
		return
	}
	var kinds []string
	for _, run := range r.Runs {
		for kind := range run.Coalesced {
			if !slices.Contains(kinds, kind) {
				kinds = append(kinds, kind)
			}
		}
	}
	// The kinds in the order of a pair's calls, then any others.
	order := []string{"reserve", "complete", "lookup"}
	slices.SortFunc(kinds, func(a, b string) int {
		ia, ib := slices.Index(order, a), slices.Index(order, b)
		if ia < 0 {
			ia = len(order)
		}
		if ib < 0 {
			ib = len(order)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	fmt.Fprintln(w, "\nledgerd processes (calls answered, peak RSS (all: the largest), CPU time, PostgreSQL sessions; group: coalesced calls per statement):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "workload\tworkers\tledgerd\tcalls\tRSS MiB\tCPU s\tpg sessions\t"
	for _, kind := range kinds {
		header += "group " + kind + "\t"
	}
	fmt.Fprintln(tw, header)
	line := func(run RunResult, name string, calls, rss int64, cpu float64, sessions int, coalesced map[string]Coalesced) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.0f\t%.1f\t%s\t", run.Workload, run.Workers, name, calls, mib(rss), cpu, count(sessions))
		for _, kind := range kinds {
			group := "-"
			if c, ok := coalesced[kind]; ok && c.Statements > 0 {
				group = fmt.Sprintf("%.1f", c.MeanGroup)
			}
			fmt.Fprintf(tw, "%s\t", group)
		}
		fmt.Fprintln(tw)
	}
	for _, run := range r.Runs {
		var calls int64
		for _, one := range run.ReplicaResults {
			line(run, strconv.Itoa(one.Replica), one.Calls, one.PeakRSSBytes, one.CPUSeconds, one.PostgresBackends, one.Coalesced)
			calls += one.Calls
		}
		if len(run.ReplicaResults) > 1 {
			line(run, "all", calls, run.LedgerdPeakRSSBytes, run.LedgerdCPUSeconds, run.PostgresBackends, run.Coalesced)
		}
	}
	_ = tw.Flush()
}

// count prints n, or "-" for 0 (not applicable, or not counted).
func count(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// micros prints a figure in µs, or "-" when it was not measured.
func micros(us *int64) string {
	if us == nil {
		return "-"
	}
	return strconv.FormatInt(*us, 10)
}

// printSecurity writes what the secure side was and, per workload, what
// it cost against the ledgerd side.
func (r *Report) printSecurity(w io.Writer) {
	if s := r.Security; s != nil {
		fmt.Fprintf(w, "\nsecure side: %s with the server verified against the run's CA; token of %s (%s); rate limits %d/s per principal and per namespace; database %s, reached with TLS %s\n",
			s.TLSVersion, s.Principal, strings.Join(s.Roles, ", "), s.RateLimitPerSecond, s.Database, s.DatabaseTLS)
	}
	if len(r.SecureCosts) == 0 {
		return
	}
	fmt.Fprintln(w, "\nsecure / ledgerd (keys/s; p50 in µs; diff per call: the p50 difference over the operation's calls):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tworkers\tledgerd/s\tsecure/s\tsecure/ledgerd\tledgerd p50\tsecure p50\tdiff\tdiff per call\t")
	for _, c := range r.SecureCosts {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f\t%d\t%d\t%+d\t%+d\t\n", c.Workload, c.Workers, c.InsecurePerSec, c.SecurePerSec, c.Ratio,
			c.InsecureP50Us, c.SecureP50Us, c.P50DiffUs, c.P50DiffPerCallUs)
	}
	_ = tw.Flush()
}

func ms(us int64) string { return fmt.Sprintf("%.2f", float64(us)/1000) }

func outcomes(counts map[string]int64) string {
	if len(counts) == 0 {
		return "-"
	}
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s=%d", name, counts[name])
	}
	return strings.Join(parts, " ")
}
