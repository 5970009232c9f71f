package server

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/version"
	"github.com/ledgerd/ledgerd/ledger"
)

// otherNamespace is the namespace label of the namespaces beyond
// MetricsConfig.MaxNamespaceLabels, in every series labelled by namespace.
// It cannot clash with a namespace, which starts with a letter or a digit.
const otherNamespace = "_other"

// platformNamespace is the namespace label of the platform's audit events
// (empty namespace: tokens and role bindings) in ledgerd_events_deleted_total.
const platformNamespace = "_platform"

// MetricsConfig configures Metrics. Zero fields take their defaults.
type MetricsConfig struct {
	// Logger receives the failures of the lease-count query (at most one
	// line per LeaseStatsInterval). Defaults to slog.Default().
	Logger *slog.Logger
	// LeaseStatsInterval is how long the leases held and expired are cached
	// between scrapes: the query behind them scans the entries table.
	// Defaults to 15s.
	LeaseStatsInterval time.Duration
	// LeaseStatsTimeout bounds the lease-count query. Defaults to 5s.
	LeaseStatsTimeout time.Duration
	// MaxNamespaceLabels bounds the namespaces that the series labelled by
	// namespace name, all of them together: the first namespaces seen get a
	// label of their own, and what happens in the others is counted (or, for
	// the lease gauges, added up) under namespace="_other". Namespaces are
	// created by their first Reserve, so their number is the deployment's,
	// but a refused call (LEASE_LOST) may name one that does not exist.
	// Defaults to 1000.
	MaxNamespaceLabels int
}

func (c MetricsConfig) withDefaults() MetricsConfig {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.LeaseStatsInterval <= 0 {
		c.LeaseStatsInterval = 15 * time.Second
	}
	if c.LeaseStatsTimeout <= 0 {
		c.LeaseStatsTimeout = 5 * time.Second
	}
	if c.MaxNamespaceLabels <= 0 {
		c.MaxNamespaceLabels = 1000
	}
	return c
}

// Metrics are ledgerd's Prometheus metrics, in a registry of their own:
//
//   - per RPC: counts, status codes and latency (go-grpc-middleware's
//     grpc_server_* metrics);
//   - the ledger's outcomes, derived from each RPC's request and answer:
//     Reserve outcomes and stale-token refusals, by namespace;
//   - the leases held and expired per namespace, waiting Reserves, the
//     LISTEN connection, and the database pool, read at scrape time;
//   - the sweeper's deletions (ObserveSweep);
//   - the build that serves (ledgerd_build_info);
//   - failed RPCs by their ErrorInfo reason, whether the server is ready,
//     and when its TLS certificate expires (see NewTLS);
//   - the Go runtime and the process.
//
// Every counter is exported from the start, at 0 for each label value known
// in advance, and for each namespace once it is first seen, so that rate()
// sees the first increment and alerts find their series.
//
// Labels are bounded: namespace (in every series that has it, see
// MetricsConfig.MaxNamespaceLabels), outcome and method take a few fixed
// values, and no metric is labelled by key or owner.
//
// Pass Metrics to New (Config.Metrics) to record the RPCs, to NewAuth
// (AuthConfig.Metrics) to count refused authentications, to NewTLS
// (TLSConfig.Metrics) to count failed handshakes and export the
// certificate's expiry, and to
// HTTPHandler (HTTPConfig.Metrics) to serve them on /metrics, or serve
// Handler on a listener of its own.
type Metrics struct {
	registry *prometheus.Registry
	rpcs     *grpcprom.ServerMetrics

	reserveOutcomes    *prometheus.CounterVec
	staleTokenRefusals *prometheus.CounterVec
	quotaRefusals      *prometheus.CounterVec
	sweeperPurged      *prometheus.CounterVec
	sweeperDeleted     prometheus.Counter
	eventsDeleted      *prometheus.CounterVec
	sweeperErrors      prometheus.Counter
	permissionDenied   *prometheus.CounterVec
	// tlsHandshakeFailures is counted by TLS (TLSConfig.Metrics).
	tlsHandshakeFailures *prometheus.CounterVec
	authFailures         *prometheus.CounterVec // by refusal reason (see AuthConfig.Metrics)
	waitsDeclined        prometheus.Counter
	rpcErrors            *prometheus.CounterVec // by ErrorInfo reason (see errorReasonLabel)
	// certificates is the TLS whose served certificate's expiry is
	// exported (see NewTLS); nil without TLS.
	certificates atomic.Pointer[TLS]
	// readiness is the serving state of the server, exported as
	// ledgerd_ready (see New); nil before New.
	readiness atomic.Pointer[servingState]

	namespaces *labelSet
}

// The values of the outcome label of ledgerd_reserve_outcomes_total, which
// are also the outcome field of a Reserve's request log line.
const (
	outcomeAcquired   = "acquired"    // a fresh grant (or the holder's retry)
	outcomeTakeover   = "takeover"    // a grant of a released or expired lease
	outcomeReplayed   = "replayed"    // COMPLETED: the stored result replayed
	outcomeInProgress = "in_progress" // another owner holds the lease
	outcomeFailed     = "failed"      // FAILED: the stored error replayed
	outcomeMismatch   = "mismatch"    // refused: FINGERPRINT_MISMATCH
)

// NewMetrics creates the metrics of a server over store. They are served
// by the HTTP handler; Registry gives access to them otherwise.
func NewMetrics(store *ledger.Store, cfg MetricsConfig) *Metrics {
	cfg = cfg.withDefaults()
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		rpcs: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			// From a cached replay (~1ms) to a Reserve that waited for the
			// holder (up to --max-wait, 60s).
			grpcprom.WithHistogramBuckets([]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}),
		)),
		reserveOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_reserve_outcomes_total",
			Help: "Reserve answers by namespace and outcome: acquired, takeover, replayed (COMPLETED), in_progress, failed (FAILED), mismatch (refused with FINGERPRINT_MISMATCH).",
		}, []string{"namespace", "outcome"}),
		staleTokenRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_stale_token_refusals_total",
			Help: "Calls refused with LEASE_LOST because their fencing token was not the key's current one (a zombie worker, or a key that finished), by namespace and method.",
		}, []string{"namespace", "method"}),
		quotaRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_quota_refusals_total",
			Help: "Calls refused with QUOTA_EXCEEDED, by namespace and method: Reserve for max_held_leases, Complete for max_stored_bytes.",
		}, []string{"namespace", "method"}),
		sweeperPurged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_sweeper_purged_entries_total",
			Help: "Completed and failed entries removed by the retention sweeper, by namespace.",
		}, []string{"namespace"}),
		sweeperDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledgerd_sweeper_deleted_events_total",
			Help: "Audit events deleted by the retention sweeper.",
		}),
		eventsDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_events_deleted_total",
			Help: "Audit events deleted by the retention sweeper, by namespace (_platform: the platform's events, of tokens and role bindings).",
		}, []string{"namespace"}),
		sweeperErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledgerd_sweeper_errors_total",
			Help: "Sweeper passes that failed.",
		}),
		permissionDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_permission_denied_total",
			Help: "Calls refused with PERMISSION_DENIED (an authenticated principal without the role), by method.",
		}, []string{"method"}),
		tlsHandshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_tls_handshake_failures_total",
			Help: "TLS handshakes that failed, by port (grpc, http) and reason: no_client_certificate (one is required), untrusted_client_certificate (it did not verify against the client CAs), other.",
		}, []string{"port", "reason"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_auth_failures_total",
			Help: "Refused authentications, by reason: missing_credentials, malformed, unknown_token, wrong_secret, revoked, expired, certificate_without_name, rate_limited (a source address that failed too often, refused before its credentials were read).",
		}, []string{"reason"}),
		waitsDeclined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledgerd_reserve_waits_declined_total",
			Help: "Reserves with a wait_timeout answered without waiting, because their principal held --max-waiting-reserves-per-principal waits on this replica (ledgerd_reserve_waiters counts the waits).",
		}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledgerd_rpc_errors_total",
			Help: "RPCs that failed, by the reason of their google.rpc.ErrorInfo (LEASE_LOST, RATE_LIMITED, UNAUTHENTICATED...; _other: an error without a known reason).",
		}, []string{"reason"}),
	}
	// Every counter starts at 0 for each label value known in advance, so
	// that rate() and increase() see its first increment, and a dashboard or
	// an alert finds the series before anything went wrong. Namespaces are
	// known when they are first seen (see initNamespace).
	m.namespaces = newLabelSet(cfg.MaxNamespaceLabels, m.initNamespace)
	for _, reason := range refusalReasons {
		m.authFailures.WithLabelValues(reason)
	}
	for _, reason := range errorReasons() {
		m.rpcErrors.WithLabelValues(reason)
	}
	for _, service := range []grpc.ServiceDesc{ledgerv1.LedgerService_ServiceDesc, ledgerv1.LedgerAdminService_ServiceDesc} {
		for _, method := range service.Methods {
			m.permissionDenied.WithLabelValues(method.MethodName)
		}
	}
	m.eventsDeleted.WithLabelValues(platformNamespace)
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo(version.Get()),
		m.rpcs,
		m.reserveOutcomes,
		m.staleTokenRefusals,
		m.quotaRefusals,
		m.sweeperPurged,
		m.sweeperDeleted,
		m.eventsDeleted,
		m.sweeperErrors,
		m.permissionDenied,
		m.tlsHandshakeFailures,
		m.authFailures,
		m.waitsDeclined,
		newStoreCollector(store, cfg, m.namespaces),
		newPoolCollector("pool", "--db-max-conns", store.PoolStat),
		newPoolCollector("read_pool", "--read-db-max-conns", store.ReadPoolStat),
		m.rpcErrors,
		stateCollector{m},
	)
	return m
}

// The methods whose calls may be refused with LEASE_LOST and with
// QUOTA_EXCEEDED, by which ledgerd_stale_token_refusals_total and
// ledgerd_quota_refusals_total start at 0 (see initNamespace).
var (
	staleTokenMethods = []string{"Heartbeat", "Complete", "Fail", "Release"}
	quotaMethods      = []string{"Reserve", "Complete"}
	reserveOutcomes   = []string{outcomeAcquired, outcomeTakeover, outcomeReplayed, outcomeInProgress, outcomeFailed, outcomeMismatch}
)

// initNamespace starts the counters labelled by namespace at 0 for a
// namespace label seen for the first time: its Reserve outcomes, its
// refusals and its sweeper counts, 14 series. A namespace's series thus
// cost the same whether or not anything went wrong in it, and the namespace
// cap (MetricsConfig.MaxNamespaceLabels) bounds them all.
func (m *Metrics) initNamespace(label string) {
	for _, outcome := range reserveOutcomes {
		m.reserveOutcomes.WithLabelValues(label, outcome)
	}
	for _, method := range staleTokenMethods {
		m.staleTokenRefusals.WithLabelValues(label, method)
	}
	for _, method := range quotaMethods {
		m.quotaRefusals.WithLabelValues(label, method)
	}
	m.sweeperPurged.WithLabelValues(label)
	m.eventsDeleted.WithLabelValues(label)
}

// errorReasons are the values of ledgerd_rpc_errors_total's reason label:
// the ErrorReason enum's names (but the unspecified one), and otherReason.
func errorReasons() []string {
	reasons := []string{otherReason}
	for number, name := range ledgerv1.ErrorReason_name {
		if number != int32(ledgerv1.ErrorReason_ERROR_REASON_UNSPECIFIED) {
			reasons = append(reasons, name)
		}
	}
	slices.Sort(reasons)
	return reasons
}

// otherReason is the reason label of a failed RPC whose error carries no
// ErrorInfo reason of the ErrorReason enum (gRPC's own UNIMPLEMENTED, say).
const otherReason = "_other"

// errorReasonLabel is the reason label of a failed RPC's error: its
// ErrorInfo reason if the enum names it, otherReason otherwise, so that
// the label takes a fixed set of values.
func errorReasonLabel(err error) string {
	reason := reasonOf(err)
	if _, ok := ledgerv1.ErrorReason_value[reason]; !ok || reason == ledgerv1.ErrorReason_ERROR_REASON_UNSPECIFIED.String() {
		return otherReason
	}
	return reason
}

// errorInterceptor counts the calls that fail by their reason
// (ledgerd_rpc_errors_total). It stands outside the interceptors that
// refuse calls (authentication, rate limits), so that it counts their
// refusals too.
func (m *Metrics) errorInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			m.rpcErrors.WithLabelValues(errorReasonLabel(err)).Inc()
		}
		return resp, err
	}
}

// watchCertificate exports the expiry of the certificate that t serves
// (ledgerd_tls_certificate_expiry_timestamp_seconds), read at each scrape
// so that a reloaded certificate shows at once, and starts the failed
// handshakes of every port and reason at 0.
func (m *Metrics) watchCertificate(t *TLS) {
	m.certificates.Store(t)
	for _, port := range tlsPorts {
		for _, reason := range handshakeReasons {
			m.tlsHandshakeFailures.WithLabelValues(port, reason)
		}
	}
}

// watchReadiness exports whether the server is ready (ledgerd_ready), as
// /readyz and the gRPC health service say.
func (m *Metrics) watchReadiness(state *servingState) { m.readiness.Store(state) }

// tlsPorts are the values of the port label of the TLS metrics: both ports
// serve the same certificate.
var tlsPorts = []string{"grpc", "http"}

// stateCollector exports, read at each scrape, whether the server is ready
// (once New has run) and when the served certificate expires, one series
// per port (when the server has TLS).
type stateCollector struct{ m *Metrics }

var (
	readyDesc = prometheus.NewDesc("ledgerd_ready",
		"1 while the replica is ready (/readyz answers 200, the gRPC health service says SERVING); 0 while it starts, cannot reach the database, or shuts down.",
		nil, nil)
	certificateExpiryDesc = prometheus.NewDesc("ledgerd_tls_certificate_expiry_timestamp_seconds",
		"When the certificate that the port serves expires (its NotAfter), in seconds since the Unix epoch; read at each scrape, after the certificate files are checked for a rotation.",
		[]string{"port"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- certificateExpiryDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	if state := c.m.readiness.Load(); state != nil {
		ready := 0.0
		if state.notReadyReason() == "" {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
	}
	if t := c.m.certificates.Load(); t != nil {
		notAfter := float64(t.served().NotAfter.Unix())
		for _, port := range tlsPorts {
			ch <- prometheus.MustNewConstMetric(certificateExpiryDesc, prometheus.GaugeValue, notAfter, port)
		}
	}
}

// Registry returns the registry that holds the metrics, for a caller that
// adds its own or serves them elsewhere.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the metrics in Prometheus' formats (GET /metrics), without
// authentication: what it answers names every namespace that has a label
// (see MetricsConfig.MaxNamespaceLabels). Failures to collect a metric are
// logged to logger and the rest is served.
func (m *Metrics) Handler(logger *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError, // serve what could be collected
		Registry:      m.registry,               // promhttp_metric_handler_errors_total
	})
}

// ObserveSweep records one pass of the retention sweeper: the entries it
// purged and the audit events it deleted, by namespace, and whether it
// failed (a failed pass may still have deleted some rows in the batches
// before the failure, which are counted).
func (m *Metrics) ObserveSweep(r ledger.SweepReport) {
	for namespace, purged := range r.PurgedEntries {
		m.sweeperPurged.WithLabelValues(m.namespaces.label(namespace)).Add(float64(purged))
	}
	for namespace, deleted := range r.DeletedEvents {
		label := platformNamespace
		if namespace != "" {
			label = m.namespaces.label(namespace)
		}
		m.eventsDeleted.WithLabelValues(label).Add(float64(deleted))
		m.sweeperDeleted.Add(float64(deleted))
	}
	if r.Err != nil {
		m.sweeperErrors.Inc()
	}
}

// serverOptions are the options that record the RPCs: the interceptors for
// streams (the health service's Watch, reflection), since the unary ones
// are in the chain (see unaryInterceptors).
func (m *Metrics) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainStreamInterceptor(m.rpcs.StreamServerInterceptor())}
}

// observe records the ledger outcome of one RPC (see callOutcome).
func (m *Metrics) observe(method string, call callOutcome) {
	switch {
	case call.reserve != "":
		m.reserveOutcomes.WithLabelValues(m.namespaces.label(call.namespace), call.reserve).Inc()
	case call.reason == ReasonLeaseLost:
		m.staleTokenRefusals.WithLabelValues(m.namespaces.label(call.namespace), method).Inc()
	case call.reason == ReasonQuotaExceeded:
		m.quotaRefusals.WithLabelValues(m.namespaces.label(call.namespace), method).Inc()
	}
}

// labelSet admits up to max distinct label values; later ones become
// otherNamespace, so that requests cannot grow the series without bound.
// admitted is called once for each label it hands out, otherNamespace
// included, before the label is returned.
type labelSet struct {
	mu       sync.Mutex
	values   map[string]struct{}
	max      int
	full     bool // otherNamespace has been handed out
	admitted func(label string)
}

func newLabelSet(maxValues int, admitted func(label string)) *labelSet {
	return &labelSet{values: make(map[string]struct{}), max: maxValues, admitted: admitted}
}

func (s *labelSet) label(value string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.values[value]; ok {
		return value
	}
	if len(s.values) >= s.max {
		if !s.full {
			s.full = true
			s.admitted(otherNamespace)
		}
		return otherNamespace
	}
	s.values[value] = struct{}{}
	s.admitted(value)
	return value
}

// storeCollector reads the Store's state at scrape time: the leases held
// and expired per namespace (cached, see MetricsConfig.LeaseStatsInterval),
// the waiting Reserves and the LISTEN connection.
type storeCollector struct {
	store      *ledger.Store
	interval   time.Duration
	timeout    time.Duration
	logger     *slog.Logger
	namespaces *labelSet // shared with the other series labelled by namespace

	held, expired, waiters, listening, statsErrors, statsAge *prometheus.Desc
	coalescedStatements, coalescedCalls, coalesceFallbacks   *prometheus.Desc

	mu          sync.Mutex // one query at a time; guards the fields below
	queriedAt   time.Time  // last attempt, successful or not
	succeededAt time.Time
	counts      map[string]ledger.LeaseCount
	errors      float64
}

func newStoreCollector(store *ledger.Store, cfg MetricsConfig, namespaces *labelSet) *storeCollector {
	return &storeCollector{
		store:      store,
		interval:   cfg.LeaseStatsInterval,
		timeout:    cfg.LeaseStatsTimeout,
		logger:     cfg.Logger,
		namespaces: namespaces,
		held: prometheus.NewDesc("ledgerd_leases_held",
			"Leased entries whose lease has not run out, by namespace (read at most every lease-stats interval).",
			[]string{"namespace"}, nil),
		expired: prometheus.NewDesc("ledgerd_leases_expired",
			"Leased entries whose lease ran out and that nobody has taken over yet, by namespace.",
			[]string{"namespace"}, nil),
		statsErrors: prometheus.NewDesc("ledgerd_lease_stats_errors_total",
			"Failed queries for ledgerd_leases_held and ledgerd_leases_expired (which then keep their last values).",
			nil, nil),
		statsAge: prometheus.NewDesc("ledgerd_lease_stats_age_seconds",
			"Age of ledgerd_leases_held and ledgerd_leases_expired: time since the last successful query.",
			nil, nil),
		waiters: prometheus.NewDesc("ledgerd_reserve_waiters",
			"Reserves waiting for the holder of a key (wait_timeout) now.",
			nil, nil),
		listening: prometheus.NewDesc("ledgerd_listener_connected",
			"1 while the LISTEN connection that wakes waiting Reserves is up; 0 while waiters fall back to polling.",
			nil, nil),
		coalescedStatements: prometheus.NewDesc("ledgerd_coalesced_statements_total",
			"Statements run for coalesced singleton calls, by kind (reserve, complete, lookup); calls / statements is the mean batch size.",
			[]string{"kind"}, nil),
		coalescedCalls: prometheus.NewDesc("ledgerd_coalesced_calls_total",
			"Singleton calls that went through the coalescer, by kind.",
			[]string{"kind"}, nil),
		coalesceFallbacks: prometheus.NewDesc("ledgerd_coalesce_fallbacks_total",
			"Coalesced statements that failed and whose calls were run again one by one, by kind.",
			[]string{"kind"}, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.held, c.expired, c.statsErrors, c.statsAge, c.waiters, c.listening,
		c.coalescedStatements, c.coalescedCalls, c.coalesceFallbacks} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	counts, errors, age := c.leaseCounts()
	for namespace, n := range c.byLabel(counts) {
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(n.Held), namespace)
		ch <- prometheus.MustNewConstMetric(c.expired, prometheus.GaugeValue, float64(n.Expired), namespace)
	}
	ch <- prometheus.MustNewConstMetric(c.statsErrors, prometheus.CounterValue, errors)
	if age >= 0 {
		ch <- prometheus.MustNewConstMetric(c.statsAge, prometheus.GaugeValue, age.Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.waiters, prometheus.GaugeValue, float64(c.store.Waiters()))
	listening := 0.0
	if c.store.Listening() {
		listening = 1
	}
	ch <- prometheus.MustNewConstMetric(c.listening, prometheus.GaugeValue, listening)
	for kind, stats := range c.store.CoalesceStats() {
		ch <- prometheus.MustNewConstMetric(c.coalescedStatements, prometheus.CounterValue, float64(stats.Batches), kind)
		ch <- prometheus.MustNewConstMetric(c.coalescedCalls, prometheus.CounterValue, float64(stats.Items), kind)
		ch <- prometheus.MustNewConstMetric(c.coalesceFallbacks, prometheus.CounterValue, float64(stats.Fallbacks), kind)
	}
}

// byLabel adds the lease counts up by namespace label: the namespaces
// beyond the label cap are added up under otherNamespace. Namespaces are
// admitted to the cap in name order, so that which ones get a label does
// not depend on map order.
func (c *storeCollector) byLabel(counts map[string]ledger.LeaseCount) map[string]ledger.LeaseCount {
	labelled := make(map[string]ledger.LeaseCount, len(counts))
	for _, namespace := range slices.Sorted(maps.Keys(counts)) {
		label := c.namespaces.label(namespace)
		sum := labelled[label]
		sum.Held += counts[namespace].Held
		sum.Expired += counts[namespace].Expired
		labelled[label] = sum
	}
	return labelled
}

// leaseCounts returns the cached counts, querying again once the interval
// has passed since the last attempt. A failed query is counted and logged,
// and the last counts are kept: a scrape never fails because of it, and a
// database that is down is not asked more often than the interval. The age
// is negative while no query has succeeded.
func (c *storeCollector) leaseCounts() (map[string]ledger.LeaseCount, float64, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.queriedAt) >= c.interval {
		c.queriedAt = now
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		counts, err := c.store.LeaseCounts(ctx)
		cancel()
		if err != nil {
			c.errors++
			c.logger.Warn("metrics: counting leases", "error", err)
		} else {
			c.counts, c.succeededAt = counts, now
		}
	}
	if c.succeededAt.IsZero() {
		return c.counts, c.errors, -1
	}
	return c.counts, c.errors, time.Since(c.succeededAt)
}

// poolCollector reads a database pool's statistics at scrape time.
type poolCollector struct {
	stat  func() *pgxpool.Stat // nil when there is no such pool
	descs []poolMetric
}

type poolMetric struct {
	desc      *prometheus.Desc
	valueType prometheus.ValueType
	value     func(*pgxpool.Stat) float64
}

// newPoolCollector exports a pool's statistics as ledgerd_db_<pool>_*:
// "pool" for the primary's, "read_pool" for the standby's of the audit
// reads (--read-database-url), whose maximum is set by maxFlag.
func newPoolCollector(pool, maxFlag string, stat func() *pgxpool.Stat) *poolCollector {
	gauge := func(name, help string, value func(*pgxpool.Stat) float64) poolMetric {
		name = strings.Replace(name, "_pool_", "_"+pool+"_", 1)
		return poolMetric{prometheus.NewDesc(name, help, nil, nil), prometheus.GaugeValue, value}
	}
	counter := func(name, help string, value func(*pgxpool.Stat) float64) poolMetric {
		name = strings.Replace(name, "_pool_", "_"+pool+"_", 1)
		return poolMetric{prometheus.NewDesc(name, help, nil, nil), prometheus.CounterValue, value}
	}
	return &poolCollector{stat: stat, descs: []poolMetric{
		gauge("ledgerd_db_pool_acquired_conns", "Connections in use by a statement now.",
			func(s *pgxpool.Stat) float64 { return float64(s.AcquiredConns()) }),
		gauge("ledgerd_db_pool_idle_conns", "Idle connections in the pool now.",
			func(s *pgxpool.Stat) float64 { return float64(s.IdleConns()) }),
		gauge("ledgerd_db_pool_constructing_conns", "Connections being opened now.",
			func(s *pgxpool.Stat) float64 { return float64(s.ConstructingConns()) }),
		gauge("ledgerd_db_pool_total_conns", "Connections in the pool now: acquired, idle and being opened.",
			func(s *pgxpool.Stat) float64 { return float64(s.TotalConns()) }),
		gauge("ledgerd_db_pool_max_conns", "The pool's maximum size ("+maxFlag+").",
			func(s *pgxpool.Stat) float64 { return float64(s.MaxConns()) }),
		counter("ledgerd_db_pool_acquires_total", "Connections acquired from the pool.",
			func(s *pgxpool.Stat) float64 { return float64(s.AcquireCount()) }),
		counter("ledgerd_db_pool_acquire_seconds_total", "Time spent acquiring connections, waits included.",
			func(s *pgxpool.Stat) float64 { return s.AcquireDuration().Seconds() }),
		counter("ledgerd_db_pool_empty_acquires_total", "Acquisitions that had to wait because no connection was idle: the pool is too small for the load, or the database too slow.",
			func(s *pgxpool.Stat) float64 { return float64(s.EmptyAcquireCount()) }),
		counter("ledgerd_db_pool_empty_acquire_wait_seconds_total", "Time spent waiting in the acquisitions that found no idle connection.",
			func(s *pgxpool.Stat) float64 { return s.EmptyAcquireWaitTime().Seconds() }),
		counter("ledgerd_db_pool_canceled_acquires_total", "Acquisitions abandoned because the request's context ended first.",
			func(s *pgxpool.Stat) float64 { return float64(s.CanceledAcquireCount()) }),
		counter("ledgerd_db_pool_new_conns_total", "Connections opened.",
			func(s *pgxpool.Stat) float64 { return float64(s.NewConnsCount()) }),
		counter("ledgerd_db_pool_max_lifetime_destroys_total", "Connections closed because they reached their maximum lifetime.",
			func(s *pgxpool.Stat) float64 { return float64(s.MaxLifetimeDestroyCount()) }),
		counter("ledgerd_db_pool_max_idle_destroys_total", "Connections closed because they were idle too long.",
			func(s *pgxpool.Stat) float64 { return float64(s.MaxIdleDestroyCount()) }),
	}}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.descs {
		ch <- m.desc
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	stat := c.stat()
	if stat == nil {
		return
	}
	for _, m := range c.descs {
		ch <- prometheus.MustNewConstMetric(m.desc, m.valueType, m.value(stat))
	}
}

// denied counts a call refused with PERMISSION_DENIED.
func (m *Metrics) denied(fullMethod string) {
	m.permissionDenied.WithLabelValues(methodName(fullMethod)).Inc()
}

// waitDeclined counts a Reserve answered without waiting, its principal at
// its cap of waiting Reserves. A nil *Metrics records nothing.
func (m *Metrics) waitDeclined() {
	if m != nil {
		m.waitsDeclined.Inc()
	}
}
