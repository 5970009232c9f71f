package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/linkcheck"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/internal/tlstest"
	"github.com/ledgerd/ledgerd/ledger"
)

// The monitoring artifacts, relative to this package's directory.
const (
	repoRoot       = "../.."
	rulesFile      = repoRoot + "/deploy/prometheus/ledgerd-rules.yaml"
	dashboardFile  = repoRoot + "/deploy/grafana/ledgerd.json"
	promcheckDir   = repoRoot + "/deploy/promcheck"
	operationsFile = repoRoot + "/docs/operations.md"
)

// monitoredDaemon is a ledgerd served as the monitoring tests need every
// metric: TLS on both ports (the certificate and handshake metrics),
// authentication (the auth metrics), a read pool, and /metrics on an
// internal listener, scraped over plain HTTP.
type monitoredDaemon struct {
	daemon
	metricsAddr string
	worker      ledgerv1.LedgerServiceClient // cert:alice, a worker in namespace "ns"
}

func startMonitoredDaemon(t *testing.T) monitoredDaemon {
	t.Helper()
	url := pgtest.Schema(t)
	b := ledgertest.StoreAt(t, url, ledger.Config{})
	_, err := b.Store.GrantRole(context.Background(), ledger.RoleBinding{Principal: "cert:alice", NamespacePattern: "ns", Role: ledger.RoleWorker}, "test")
	require.NoError(t, err)
	_, err = b.Store.CreateNamespace(context.Background(), "ns", ledger.NamespaceUpdate{}, "test") // not created on first use
	require.NoError(t, err)

	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "ledgerd").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "clients.pem")
	tlstest.WriteFile(t, caFile, ca.PEM)
	d := startDaemon(t, map[string]string{
		"LEDGER_DATABASE_URL": url, "LEDGER_READ_DATABASE_URL": url, "LEDGER_INSECURE_DEV": "false",
		"LEDGER_METRICS_LISTEN_ADDR": "127.0.0.1:0",
		"LEDGER_TLS_CERT_FILE":       certFile, "LEDGER_TLS_KEY_FILE": keyFile, "LEDGER_TLS_CLIENT_CA_FILE": caFile,
	})
	m := regexp.MustCompile(`"metrics_addr":"([^"]+)"`).FindStringSubmatch(d.stdout.String())
	require.NotNil(t, m, d.stdout.String())

	conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Issue(t, "alice").TLSCertificate(t)},
	})))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return monitoredDaemon{daemon: d, metricsAddr: m[1], worker: ledgerv1.NewLedgerServiceClient(conn)}
}

// scrape returns the /metrics page and its families by name.
func (d monitoredDaemon) scrape(t *testing.T) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	res, err := http.Get("http://" + d.metricsAddr + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err)
	return string(body), families
}

// hasLine reports whether the /metrics page has the line (a series and its
// value); the page is too long for a failure message.
func hasLine(page, line string) bool {
	return slices.Contains(strings.Split(page, "\n"), line)
}

// documentedMetric is a metric of docs/operations.md's table.
type documentedMetric struct {
	name       string
	namespaced bool // labelled by namespace: its series appear with a namespace
	counter    bool
}

// documentedMetrics reads the metric names of docs/operations.md's table:
// every name in backquotes in the first column, with {a,b} expanded, and
// ledgerd_db_read_pool_* as the read pool's twin of each pool metric.
func documentedMetrics(t *testing.T) []documentedMetric {
	t.Helper()
	doc, err := os.ReadFile(operationsFile)
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "\n## Metrics\n")
	require.True(t, ok, "no Metrics section in %s", operationsFile)
	section, _, _ = strings.Cut(strings.TrimLeft(section, "\n"), "\n\n") // the table
	name := regexp.MustCompile("`([a-z_]+(?:\\{[a-z_,]+\\}[a-z_]*)?\\*?)`")
	braces := regexp.MustCompile(`\{([a-z_,]+)\}`)
	var metrics []documentedMetric
	for row := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(row, "|")
		if len(cells) < 5 || !strings.Contains(cells[1], "`") {
			continue
		}
		namespaced := strings.Contains(cells[3], "`namespace`")
		counter := strings.HasPrefix(strings.TrimSpace(cells[2]), "counter")
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			names := []string{m[1]}
			if b := braces.FindStringSubmatchIndex(m[1]); b != nil {
				names = nil
				for part := range strings.SplitSeq(m[1][b[2]:b[3]], ",") {
					names = append(names, m[1][:b[0]]+part+m[1][b[1]:])
				}
			}
			for _, n := range names {
				metrics = append(metrics, documentedMetric{name: n, namespaced: namespaced, counter: counter})
			}
		}
	}
	var expanded []documentedMetric
	for _, m := range metrics {
		if prefix, ok := strings.CutSuffix(m.name, "*"); ok {
			for _, pool := range metrics {
				if rest, ok := strings.CutPrefix(pool.name, "ledgerd_db_pool_"); ok {
					expanded = append(expanded, documentedMetric{name: prefix + rest, counter: pool.counter})
				}
			}
			continue
		}
		expanded = append(expanded, m)
	}
	require.Greater(t, len(expanded), 30, "metric names read from %s's table", operationsFile)
	return expanded
}

// TestMonitoringDocumentedMetricsExported checks that a fresh ledgerd
// exposes every metric that docs/operations.md's table names: before any
// call, all but those labelled by namespace; once a namespace has been
// seen, those too, its counters at 0 for every outcome, method and reason
// that did not happen yet, so that rates and alerts see the first one.
func TestMonitoringDocumentedMetricsExported(t *testing.T) {
	t.Parallel()
	d := startMonitoredDaemon(t)
	documented := documentedMetrics(t)

	exposed := func(families map[string]*dto.MetricFamily, name string) bool {
		for _, suffix := range []string{"", "_bucket"} { // a histogram's family has its own name
			if f, ok := families[strings.TrimSuffix(name, "_bucket")+suffix]; ok && len(f.GetMetric()) > 0 {
				return true
			}
		}
		return false
	}
	page, families := d.scrape(t)
	for _, m := range documented {
		if !m.namespaced {
			require.True(t, exposed(families, m.name), "a fresh ledgerd does not expose %s", m.name)
		}
	}
	for _, series := range []string{
		`ledgerd_auth_failures_total{reason="expired"} 0`,
		`ledgerd_rpc_errors_total{reason="LEASE_LOST"} 0`,
		`ledgerd_rpc_errors_total{reason="RATE_LIMITED"} 0`,
		`ledgerd_tls_handshake_failures_total{port="http",reason="untrusted_client_certificate"} 0`,
		`ledgerd_permission_denied_total{method="ForceRelease"} 0`,
		`ledgerd_events_deleted_total{namespace="_platform"} 0`,
		`ledgerd_sweeper_errors_total 0`,
		`grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Complete",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 0`,
		`ledgerd_ready 1`,
	} {
		require.True(t, hasLine(page, series), "no series %s", series)
	}

	_, err := d.worker.Reserve(context.Background(), &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	page, families = d.scrape(t)
	for _, m := range documented {
		// The lease gauges are read from the database at most every 15s, so
		// the scrape before the Reserve left them empty for now (see
		// TestMonitoringArtifacts, whose first scrape follows a Reserve).
		if !strings.HasPrefix(m.name, "ledgerd_leases_") {
			require.True(t, exposed(families, m.name), "ledgerd does not expose %s once a namespace is seen", m.name)
		}
	}
	for _, series := range []string{
		`ledgerd_reserve_outcomes_total{namespace="ns",outcome="acquired"} 1`,
		`ledgerd_reserve_outcomes_total{namespace="ns",outcome="mismatch"} 0`,
		`ledgerd_reserve_outcomes_total{namespace="ns",outcome="replayed"} 0`,
		`ledgerd_stale_token_refusals_total{method="Complete",namespace="ns"} 0`,
		`ledgerd_quota_refusals_total{method="Reserve",namespace="ns"} 0`,
		`ledgerd_sweeper_purged_entries_total{namespace="ns"} 0`,
	} {
		require.True(t, hasLine(page, series), "no series %s", series)
	}
	expiry := families["ledgerd_tls_certificate_expiry_timestamp_seconds"]
	require.NotNil(t, expiry, page)
	require.Len(t, expiry.GetMetric(), 2, "one series per port")
	require.Greater(t, expiry.GetMetric()[0].GetGauge().GetValue(), float64(1e9))
	require.NoError(t, d.stop())
}

// buildPromcheck compiles the checker once per test process, so that the
// tests that run it in parallel do not each compile Prometheus' packages
// on a cold build cache (then each go run only links).
var buildPromcheck = sync.OnceValues(func() ([]byte, error) {
	cmd := exec.Command("go", "build", "-o", os.DevNull, ".")
	cmd.Dir = promcheckDir
	return cmd.CombinedOutput()
})

// runPromcheck runs the rules and dashboard checker (its own module, to keep
// Prometheus out of ledgerd's go.mod) and returns its output and error.
func runPromcheck(t *testing.T, args ...string) (string, error) {
	t.Helper()
	built, err := buildPromcheck()
	require.NoError(t, err, "go build deploy/promcheck: %s", built)
	cmd := exec.Command("go", append([]string{"run", "."}, args...)...)
	cmd.Dir = promcheckDir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestMonitoringArtifacts checks the alert rules and the dashboard as
// Prometheus and Grafana read them, against a live ledgerd: the rules parse
// and type-check with Prometheus' own parser, every dashboard query parses
// as PromQL, every metric (and label) they name is on the /metrics page of
// a ledgerd that served a call, the lease gauges are never added up across
// replicas, and every alert's runbook_url resolves to a section of
// docs/operations.md.
func TestMonitoringArtifacts(t *testing.T) {
	t.Parallel()
	d := startMonitoredDaemon(t)
	_, err := d.worker.Reserve(context.Background(), &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	page, _ := d.scrape(t)
	require.NoError(t, d.stop())
	require.True(t, hasLine(page, `ledgerd_leases_held{namespace="ns"} 1`), "the lease gauges count the Reserve")
	metricsFile := filepath.Join(t.TempDir(), "metrics.txt")
	require.NoError(t, os.WriteFile(metricsFile, []byte(page), 0o600))

	rules, err := filepath.Abs(rulesFile)
	require.NoError(t, err)
	dashboard, err := filepath.Abs(dashboardFile)
	require.NoError(t, err)
	out, err := runPromcheck(t, "--rules", rules, "--dashboard", dashboard, "--metrics", metricsFile)
	require.NoError(t, err, out)
	require.Contains(t, out, "promcheck: ")

	// Each runbook_url must resolve in the repository: check them as links
	// of a Markdown file at the repository's root, beside the guide.
	var runbooks []string
	for line := range strings.SplitSeq(out, "\n") {
		if url, ok := strings.CutPrefix(line, "runbook: "); ok {
			runbooks = append(runbooks, url)
		}
	}
	require.NotEmpty(t, runbooks, out)
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "docs"), 0o755))
	guide, err := os.ReadFile(operationsFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "docs", "operations.md"), guide, 0o600))
	var links strings.Builder
	for _, url := range runbooks {
		links.WriteString("- [runbook](" + url + ")\n")
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "runbooks.md"), []byte(links.String()), 0o600))
	repo, err := linkcheck.LoadDir(root)
	require.NoError(t, err)
	problems, err := linkcheck.Check(repo, linkcheck.Options{})
	require.NoError(t, err)
	var broken []string
	for _, p := range problems {
		if p.File == "runbooks.md" {
			broken = append(broken, p.String())
		}
	}
	require.Empty(t, broken, "runbook_url annotations that name no section of docs/operations.md")

	// The guide points to the rules file rather than keeping a copy.
	require.Contains(t, string(guide), "deploy/prometheus/ledgerd-rules.yaml")
	require.NotContains(t, string(guide), "alert: Ledgerd", "docs/operations.md keeps a copy of the rules")
}

// TestMonitoringCheckerRefuses shows that the checker fails, naming the
// rule or panel, on what it exists to catch: a lease gauge added up across
// replicas, an alert without severity or runbook, an expression that does
// not parse, and a metric that ledgerd does not expose.
func TestMonitoringCheckerRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	require.NoError(t, os.WriteFile(rules, []byte(`groups:
  - name: bad
    rules:
      - alert: Summed
        expr: sum by (namespace) (ledgerd_leases_expired) > 0
        labels: {severity: warning}
        annotations: {summary: s, runbook_url: "docs/operations.md#x"}
      - alert: Unlabelled
        expr: ledgerd_ready == 0
        annotations: {summary: s}
      - alert: Unparsable
        expr: rate(ledgerd_sweeper_errors_total) > 0
        labels: {severity: warning}
        annotations: {summary: s, runbook_url: "docs/operations.md#x"}
`), 0o600))
	dashboard := filepath.Join(dir, "dashboard.json")
	require.NoError(t, os.WriteFile(dashboard, []byte(`{"title": "t", "uid": "u",
  "templating": {"list": [
    {"name": "namespace", "type": "query", "query": "label_values(ledgerd_reserve_outcomes_total, namespace)"},
    {"name": "instance", "type": "query", "query": "label_values(ledgerd_ready, instance)"}]},
  "panels": [{"type": "timeseries", "title": "Typo", "targets": [
    {"refId": "A", "expr": "sum(rate(ledgerd_reserve_outcome_total{namespace=~\"$namespace\"}[$__rate_interval]))"}]}]}`), 0o600))
	metrics := filepath.Join(dir, "metrics.txt")
	require.NoError(t, os.WriteFile(metrics, []byte("# TYPE ledgerd_ready gauge\nledgerd_ready 1\n"+
		"# TYPE ledgerd_reserve_outcomes_total counter\nledgerd_reserve_outcomes_total{namespace=\"a\",outcome=\"acquired\"} 1\n"), 0o600))

	out, err := runPromcheck(t, "--rules", rules, "--dashboard", dashboard, "--metrics", metrics)
	require.Error(t, err, out)
	require.Contains(t, out, `"Unparsable": could not parse expression`)
	require.Contains(t, out, `expected type range vector in call to function "rate"`)
	// A rules file that does not parse hides its other problems: fix it and
	// look again.
	fixed := strings.Replace(mustRead(t, rules), "rate(ledgerd_sweeper_errors_total)", "rate(ledgerd_sweeper_errors_total[5m])", 1)
	require.NoError(t, os.WriteFile(rules, []byte(fixed), 0o600))
	out, err = runPromcheck(t, "--rules", rules, "--dashboard", dashboard, "--metrics", metrics)
	require.Error(t, err, out)
	for _, want := range []string{
		`alert Summed: "sum by (namespace) (ledgerd_leases_expired) > 0": every replica reports ledgerd_leases_expired for the whole database`,
		`alert Unlabelled: label severity is "": want critical, warning or info`,
		`alert Unlabelled: annotation runbook_url is "": want docs/operations.md#<anchor>`,
		`panel "Typo" query A: metric ledgerd_reserve_outcome_total is not exposed by ledgerd`,
		`alert Unparsable: metric ledgerd_sweeper_errors_total is not exposed by ledgerd`,
	} {
		require.Contains(t, out, want)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}
