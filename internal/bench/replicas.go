package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// A replica is one ledgerd process that ledgerbench started, and where to
// read what it did: its process in /proc, its counters on /metrics, and
// its sessions in pg_stat_activity (by application_name).
type replica struct {
	number     int // from 1
	ledgerd    *devcluster.Ledgerd
	metricsURL string
	appName    string
}

// startAttempts is how often a replica is started, each time on new ports,
// when another process took one of them between the probe and the bind.
const startAttempts = 3

// scrapeTimeout bounds one read of a replica's /metrics.
const scrapeTimeout = 10 * time.Second

// startReplicas starts cfg.Replicas ledgerd processes of bin for side over
// databaseURL, one after the other (the first applies the migrations),
// each with its log in dir and the flags args gives for its HTTP address
// (then cfg.LedgerdArgs), and registers their stop. clientTLS, when not
// nil, is how to reach replicas that serve TLS.
func (r *runner) startReplicas(ctx context.Context, side, bin, databaseURL, dir string, args func(httpAddr string) []string, clientTLS *tls.Config) ([]*replica, error) {
	var replicas []*replica
	for number := 1; number <= r.cfg.Replicas; number++ {
		rep, err := startReplica(ctx, r.cfg, fmt.Sprintf("ledgerbench-%s-%s-%d", r.runID, side, number), number, side, bin, databaseURL, dir, args, clientTLS)
		if err != nil {
			return nil, err
		}
		replicas = append(replicas, rep)
		r.onClose(func() { r.stopLedgerd(rep.ledgerd) })
		fmt.Fprintf(r.stderr, "ledgerbench: %s (pid %d) serving on %s\n", rep.ledgerd.Name(), rep.ledgerd.PID(), rep.ledgerd.Addr())
	}
	return replicas, nil
}

// startReplica starts replica number of side: `ledgerd serve` with args,
// an HTTP port of its own on loopback for /metrics, and sessions named
// appName (ledgerbench-<run>-<side>-<number>: the run's own, when other
// runs share the database).
func startReplica(ctx context.Context, cfg Config, appName string, number int, side, bin, databaseURL, dir string,
	args func(httpAddr string) []string, clientTLS *tls.Config,
) (*replica, error) {
	name := "ledgerd"
	if side != SideLedgerd {
		name = side + "-ledgerd"
	}
	if cfg.Replicas > 1 {
		name = fmt.Sprintf("%s-%d", name, number)
	}
	namedURL, err := withApplicationName(databaseURL, appName)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if clientTLS != nil {
		scheme = "https"
	}
	var errs []error
	for range startAttempts {
		httpAddr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		l, err := devcluster.StartLedgerd(ctx, devcluster.LedgerdConfig{
			Binary:      bin,
			DatabaseURL: namedURL,
			Args:        append(args(httpAddr), cfg.LedgerdArgs...),
			Name:        name,
			LogPath:     filepath.Join(dir, name+".log"),
			TLS:         clientTLS,
		})
		if err == nil {
			return &replica{number: number, ledgerd: l, metricsURL: scheme + "://" + httpAddr + "/metrics", appName: appName}, nil
		}
		errs = append(errs, err)
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// withApplicationName returns databaseURL (a URL or a keyword/value DSN)
// with its sessions' application_name set to name, so that
// pg_stat_activity tells the replicas' sessions apart.
func withApplicationName(databaseURL, name string) (string, error) {
	if !strings.HasPrefix(databaseURL, "postgres://") && !strings.HasPrefix(databaseURL, "postgresql://") {
		return databaseURL + " application_name=" + name, nil // the last setting of a DSN wins
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		// The parse error may quote the URL, password included.
		return "", errors.New("--database-url is not a valid PostgreSQL URL or DSN")
	}
	query := u.Query()
	query.Set("application_name", name)
	u.RawQuery = query.Encode()
	return u.String(), nil
}

// freeLoopbackAddr returns host:port of a port of 127.0.0.1 that was free a
// moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// replicaSample is what a replica had done when it was read: its process
// and its counters.
type replicaSample struct {
	proc     procStats
	counters replicaCounters
	err      error // reading /metrics failed: the counters are missing
}

// sampleReplicas reads every replica of f. Reading /metrics comes first at the
// start of a measured phase and last at its end, so that serving it is not
// counted in the phase's CPU time.
func (r *runner) sampleReplicas(ctx context.Context, f *fleet, atStart bool) []replicaSample {
	samples := make([]replicaSample, len(f.replicas))
	for i, rep := range f.replicas {
		if atStart {
			samples[i].counters, samples[i].err = r.scrape(ctx, rep)
		}
		samples[i].proc = readProcStats(rep.ledgerd.PID())
		if !atStart {
			samples[i].counters, samples[i].err = r.scrape(ctx, rep)
		}
	}
	return samples
}

// notePeaks records every replica's peak resident set so far in the run's
// peak.
func (r *runner) notePeaks() {
	for _, f := range r.fleets {
		for _, rep := range f.replicas {
			r.peakRSS = max(r.peakRSS, readProcStats(rep.ledgerd.PID()).peakRSSBytes)
		}
	}
}

// resetPeaks records the peaks so far (warm-ups included) and starts new
// ones for f's next measured phase.
func (r *runner) resetPeaks(f *fleet) {
	r.notePeaks()
	for _, rep := range f.replicas {
		resetPeakRSS(rep.ledgerd.PID())
	}
}

// recordReplicas fills in run's figures of f's ledgerd processes: each
// replica's, from the samples taken before and after the measured phase
// (and its sessions now), and their sum.
func (r *runner) recordReplicas(ctx context.Context, run *RunResult, f *fleet, before, after []replicaSample) {
	backends, err := backendsByApplication(ctx, f.pool)
	if err != nil {
		fmt.Fprintf(r.stderr, "ledgerbench: counting PostgreSQL's sessions: %v\n", err)
	}
	run.Coalesced = map[string]Coalesced{}
	for i, rep := range f.replicas {
		one := ReplicaResult{
			Replica:          rep.number,
			PeakRSSBytes:     after[i].proc.peakRSSBytes,
			CPUSeconds:       after[i].proc.cpuSeconds - before[i].proc.cpuSeconds,
			PostgresBackends: backends[rep.appName],
		}
		if err := errors.Join(before[i].err, after[i].err); err != nil {
			fmt.Fprintf(r.stderr, "ledgerbench: reading %s's /metrics: %v\n", rep.ledgerd.Name(), err)
		} else {
			one.Calls = int64(after[i].counters.calls - before[i].counters.calls)
			one.Coalesced = after[i].counters.since(before[i].counters)
			for kind, c := range one.Coalesced {
				run.Coalesced[kind] = run.Coalesced[kind].add(c)
			}
		}
		run.ReplicaResults = append(run.ReplicaResults, one)
		run.LedgerdCPUSeconds += one.CPUSeconds
		run.LedgerdPeakRSSBytes = max(run.LedgerdPeakRSSBytes, one.PeakRSSBytes)
		run.PostgresBackends += one.PostgresBackends
		r.peakRSS = max(r.peakRSS, one.PeakRSSBytes)
	}
	if len(run.Coalesced) == 0 {
		run.Coalesced = nil
	}
}

// backendsByApplication counts the client sessions of pool's database by
// application_name: the raw side's pool is "ledgerbench", replica n's
// sessions (its pool and its LISTEN connection) "ledgerbench-<run>-<side>-n".
// Pools keep their connections open while they are used, so a count at the
// end of a measured phase is the most the phase opened, or more.
func backendsByApplication(ctx context.Context, pool *pgxpool.Pool) (map[string]int, error) {
	counts := map[string]int{}
	if pool == nil {
		return counts, nil
	}
	rows, err := pool.Query(ctx, `SELECT application_name, count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND datname = current_database() GROUP BY application_name`)
	if err != nil {
		return counts, err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return counts, err
		}
		counts[name] = n
	}
	return counts, rows.Err()
}

// replicaCounters are the counters of a replica's /metrics that a run
// compares before and after a measured phase.
type replicaCounters struct {
	// calls sums grpc_server_handled_total: every RPC answered.
	calls float64
	// coalesced is ledgerd_coalesced_calls_total and
	// ledgerd_coalesced_statements_total, by kind.
	coalesced map[string]Coalesced
	// waiters is the gauge ledgerd_reserve_waiters: Reserves waiting now.
	waiters int64
}

// since returns the coalescing done between earlier and c, by kind, for
// the kinds that saw calls.
func (c replicaCounters) since(earlier replicaCounters) map[string]Coalesced {
	out := map[string]Coalesced{}
	for kind, now := range c.coalesced {
		then := earlier.coalesced[kind]
		if calls := now.Calls - then.Calls; calls > 0 {
			out[kind] = newCoalesced(calls, now.Statements-then.Statements)
		}
	}
	return out
}

// scrape reads rep's counters from its /metrics.
func (r *runner) scrape(ctx context.Context, rep *replica) (replicaCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rep.metricsURL, nil)
	if err != nil {
		return replicaCounters{}, err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return replicaCounters{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return replicaCounters{}, fmt.Errorf("GET %s: %s", rep.metricsURL, resp.Status)
	}
	return parseCounters(resp.Body)
}

// The counters of ledgerd's /metrics that a run reads (server/metrics.go).
const (
	handledCalls        = "grpc_server_handled_total"
	coalescedCalls      = "ledgerd_coalesced_calls_total"
	coalescedStatements = "ledgerd_coalesced_statements_total"
	reserveWaiters      = "ledgerd_reserve_waiters"
)

// parseCounters reads the counters a run needs from Prometheus's text
// exposition format.
func parseCounters(body io.Reader) (replicaCounters, error) {
	c := replicaCounters{coalesced: map[string]Coalesced{}}
	scanner := bufio.NewScanner(body)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		space := strings.LastIndexByte(line, ' ')
		if space < 0 {
			continue
		}
		series, value := line[:space], line[space+1:]
		name, labels, _ := strings.Cut(series, "{")
		if name != handledCalls && name != coalescedCalls && name != coalescedStatements && name != reserveWaiters {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return c, fmt.Errorf("metrics: %q: %w", line, err)
		}
		switch name {
		case handledCalls:
			c.calls += v
			continue
		case reserveWaiters:
			c.waiters = int64(v)
			continue
		}
		kind := labelValue(labels, "kind")
		k := c.coalesced[kind]
		if name == coalescedCalls {
			k.Calls += int64(v)
		} else {
			k.Statements += int64(v)
		}
		c.coalesced[kind] = k
	}
	if err := scanner.Err(); err != nil {
		return c, fmt.Errorf("metrics: %w", err)
	}
	return c, nil
}

// labelValue returns the value of label name in a series' labels
// (`kind="reserve",…}`), or "" without it. Values with escaped quotes are
// not needed here.
func labelValue(labels, name string) string {
	for part := range strings.SplitSeq(strings.TrimSuffix(labels, "}"), ",") {
		key, value, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(key) == name {
			return strings.Trim(value, `"`)
		}
	}
	return ""
}
