package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Report is the outcome of a Run.
type Report struct {
	// Passed is true when every scenario passed.
	Passed   bool      `json:"passed"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Source names the commit of the working tree when the run started
	// (and ledgerd was built from it), "+changes" when the tree differed;
	// empty outside a git checkout.
	Source    string           `json:"source,omitempty"`
	Config    map[string]any   `json:"config"`
	Scenarios []ScenarioReport `json:"scenarios"`
}

// ScenarioReport is what the checker found after one scenario.
type ScenarioReport struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Passed is true with no duplicate, nothing lost, no stale call
	// accepted, no INTERNAL or UNKNOWN error, no call failed by a drain, no
	// call past its deadline, no stuck session, every fault
	// injected and healed, the size reached, and (pause) duplicates in the
	// control sink.
	Passed   bool     `json:"passed"`
	Failures []string `json:"failures,omitempty"`
	Seconds  float64  `json:"seconds"`
	// Cycles counts the keys completed in the ledger (Reserve→Complete
	// cycles); Keys every key the ledger has.
	Cycles int `json:"cycles"`
	Keys   int `json:"keys"`
	// Faults counts the faults injected; FaultLog lists them.
	Faults int `json:"faults"`
	// Ops counts the RPC attempts; ByMethod every operation by method (Do
	// and the sink writes included); Codes the operations by method and
	// status code.
	Ops      OpCounts            `json:"ops"`
	ByMethod map[string]OpCounts `json:"by_method"`
	Codes    map[string]int      `json:"codes"`

	Duplicates    Duplicates `json:"duplicates"`
	Lost          Lost       `json:"lost"`
	StaleAccepted Stale      `json:"stale_accepted"`
	// RefusedStale counts the calls refused for a superseded token
	// (LEASE_LOST) and the fenced sink's refusals: zombies that were
	// stopped.
	RefusedStale int     `json:"refused_stale"`
	Control      Control `json:"control"`
	// ServerErrors counts the RPC attempts that failed with INTERNAL or
	// UNKNOWN: a fault must show as UNAVAILABLE or DEADLINE_EXCEEDED
	// (retry), never as a server error.
	ServerErrors int `json:"server_errors"`
	// DrainFailures counts the calls in flight at a SIGTERM that failed.
	DrainFailures int `json:"drain_failures"`
	// StuckSessions counts ledgerd's database sessions still running a
	// statement for more than 10s at the end.
	StuckSessions int `json:"stuck_sessions"`
	// Coalescing is what the replicas said of coalescing when they started
	// serving: "on", "off", or "mixed" (replicas disagreed).
	Coalescing string `json:"coalescing"`
	// Overruns counts the calls that ledgerd's request log shows finishing
	// more than 2s after their deadline.
	Overruns int      `json:"deadline_overruns"`
	Recovery Recovery `json:"recovery"`
	// ByKind is the recovery of each kind of fault, for a nemesis of
	// several kinds (pg-failover: kill, switchover, isolate).
	ByKind   map[string]Recovery `json:"recovery_by_kind,omitempty"`
	FaultLog []Fault             `json:"fault_log"`
	// Examples shows up to 20 of the anomalies found.
	Examples []string `json:"examples,omitempty"`
}

// OpCounts counts operations by outcome.
type OpCounts struct {
	Attempted     int `json:"attempted"`
	OK            int `json:"ok"`
	Failed        int `json:"failed"`
	Indeterminate int `json:"indeterminate"`
}

// Duplicates counts effects accepted twice: keys with more than one
// 'completed' event, and (key, token) epochs with more than one write
// accepted by the fenced sink.
type Duplicates struct {
	LedgerCompletions int `json:"ledger_completions"`
	FencedEpochs      int `json:"fenced_epochs"`
	Total             int `json:"total"`
}

// Lost counts acknowledgements the final state does not keep: successful
// Completes whose key is not completed with that token and result;
// results returned to a worker (by Do, or a Reserve's replay) that differ
// from the ledger's; completed keys whose fenced sink value is not the
// completing token's; and keys on which Lookup and SQL disagree.
type Lost struct {
	Completes     int `json:"completes"`
	Results       int `json:"results"`
	Effects       int `json:"effects"`
	APIMismatches int `json:"api_mismatches"`
	Total         int `json:"total"`
}

// Stale counts calls accepted with a superseded token: in the history (a
// Heartbeat, Complete, Fail or Release under token t that succeeded
// although it was invoked after a Reserve had returned a newer token for
// the key), in the events (a completion under a lower token than a grant
// before it), and in the fenced sink (a write accepted after a write with
// a higher token); and Regressions, the grants of a key whose token was
// not higher than that of a grant answered before they were asked for
// (tokens must grow across failovers too).
type Stale struct {
	History     int `json:"history"`
	Events      int `json:"events"`
	Sink        int `json:"sink"`
	Regressions int `json:"token_regressions"`
	Total       int `json:"total"`
}

// Control measures the unfenced control sink. Duplicates counts the keys
// where a write landed after a write with a higher token (a zombie's
// effect: what the fenced sink refuses), StaleWrites those writes;
// KeysRewritten the keys written more than once at all (retries after a
// crash included).
type Control struct {
	Writes        int `json:"writes"`
	Keys          int `json:"keys"`
	KeysRewritten int `json:"keys_rewritten"`
	StaleWrites   int `json:"stale_writes"`
	Duplicates    int `json:"duplicates"`
}

// Recovery summarizes the faults' recovery times (see Fault), in seconds;
// nil when no fault had one. The Missing counts are faults without one.
type Recovery struct {
	// Faults is the number of faults summarized (in ByKind only).
	Faults              int      `json:"faults,omitempty"`
	FirstSuccessMedian  *float64 `json:"first_success_median_s"`
	FirstSuccessMax     *float64 `json:"first_success_max_s"`
	FirstSuccessMissing int      `json:"first_success_missing"`
	Rate90Median        *float64 `json:"rate90_median_s"`
	Rate90Max           *float64 `json:"rate90_max_s"`
	Rate90Missing       int      `json:"rate90_missing"`
}

// reportConfig is the part of the configuration a report shows.
func reportConfig(c Config) map[string]any {
	config := map[string]any{
		"scenarios": c.Scenarios, "cycles": c.Cycles, "faults": c.Faults,
		"fault_interval": c.FaultInterval.String(), "max_duration": c.MaxDuration.String(),
		"goroutine_workers": c.GoroutineWorkers, "worker_processes": c.WorkerProcesses,
		"workers_per_process": c.WorkersPerProcess, "lease_ttl": c.LeaseTTL.String(),
		"work_time": c.WorkTime.String(), "attempt_timeout": c.AttemptTimeout.String(),
		"do_timeout": c.DoTimeout.String(), "fsync": c.Fsync,
	}
	if len(c.LedgerdArgs) > 0 {
		config["ledgerd_args"] = c.LedgerdArgs
	}
	return config
}

// WriteFiles writes the report as dir/chaos-report.json and
// dir/chaos-report.md.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "chaos-report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "chaos-report.md"), []byte(r.Markdown()), 0o644)
}

// Markdown renders the scenario table, then each scenario's failures and
// status codes.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString(r.Table())
	b.WriteString(r.KindTable())
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, "\n### %s (%s)\n\n", s.Name, passWord(s.Passed))
		for _, f := range s.Failures {
			fmt.Fprintf(&b, "- failure: %s\n", f)
		}
		for _, e := range s.Examples {
			fmt.Fprintf(&b, "- example: %s\n", e)
		}
		codes := make([]string, 0, len(s.Codes))
		for c, n := range s.Codes {
			codes = append(codes, fmt.Sprintf("%s %d", c, n))
		}
		sort.Strings(codes)
		fmt.Fprintf(&b, "- status codes: %s\n", strings.Join(codes, ", "))
	}
	return b.String()
}

// Table renders the scenario table.
func (r *Report) Table() string {
	var b strings.Builder
	b.WriteString("| scenario | cycles | faults | RPCs | ok | failed | indeterminate | duplicates | lost | stale accepted | zombie calls refused | control-sink duplicates | drain failures | recovery: first success, median / max (s) | recovery: 90% rate, median / max (s) | result |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s / %s | %s / %s%s | %s |\n",
			s.Name, s.Cycles, s.Faults, s.Ops.Attempted, s.Ops.OK, s.Ops.Failed, s.Ops.Indeterminate,
			s.Duplicates.Total, s.Lost.Total, s.StaleAccepted.Total, s.RefusedStale, s.Control.Duplicates,
			s.DrainFailures,
			secs(s.Recovery.FirstSuccessMedian), secs(s.Recovery.FirstSuccessMax),
			secs(s.Recovery.Rate90Median), secs(s.Recovery.Rate90Max), missing(s.Recovery.Rate90Missing),
			passWord(s.Passed))
	}
	return b.String()
}

// KindTable renders the recovery of each kind of fault of the scenarios
// whose nemesis has several (the failovers), or "" when there are none.
func (r *Report) KindTable() string {
	var b strings.Builder
	for _, s := range r.Scenarios {
		if len(s.ByKind) == 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("\n| scenario | fault | faults | from the fault to the first successful Complete, median / max (s) | to 90% of the prior rate, median / max (s) |\n")
			b.WriteString("| --- | --- | ---: | ---: | ---: |\n")
		}
		kinds := make([]string, 0, len(s.ByKind))
		for kind := range s.ByKind {
			kinds = append(kinds, kind)
		}
		sort.Strings(kinds)
		for _, kind := range kinds {
			k := s.ByKind[kind]
			fmt.Fprintf(&b, "| %s | %s | %d | %s / %s%s | %s / %s%s |\n", s.Name, kind, k.Faults,
				secs(k.FirstSuccessMedian), secs(k.FirstSuccessMax), missing(k.FirstSuccessMissing),
				secs(k.Rate90Median), secs(k.Rate90Max), missing(k.Rate90Missing))
		}
	}
	return b.String()
}

func passWord(passed bool) string {
	if passed {
		return "pass"
	}
	return "**FAIL**"
}

func secs(s *float64) string {
	if s == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f", *s)
}

func missing(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d n/a)", n)
}

// Markers delimit the generated part of a document that UpdateDocument
// rewrites.
const (
	docBegin = "<!-- ledgerchaos:begin -->"
	docEnd   = "<!-- ledgerchaos:end -->"
)

// UpdateDocument replaces the part of the file at path between the
// ledgerchaos markers with the report's table, the time of the run and
// command. It fails if the file lacks the markers.
func (r *Report) UpdateDocument(path, command string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := bytes.Index(doc, []byte(docBegin)), bytes.Index(doc, []byte(docEnd))
	if begin < 0 || end < begin {
		return fmt.Errorf("%s lacks the markers %s and %s", path, docBegin, docEnd)
	}
	var b bytes.Buffer
	b.Write(doc[:begin+len(docBegin)])
	fmt.Fprintf(&b, "\n\nFigures of %s, %.0f minutes, from:\n\n```sh\n%s\n```\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"),
		r.Finished.Sub(r.Started).Minutes(), command)
	if r.Source != "" {
		fmt.Fprintf(&b, "(ledgerd and the harness built from commit `%s`.)\n\n", r.Source)
	}
	b.WriteString(r.Table())
	b.WriteString(r.KindTable())
	b.WriteString("\n")
	b.Write(doc[end:])
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// sourceCommit names the commit of the working tree the harness runs in
// (with "+changes" when it differs from it), or "" outside a git checkout.
func sourceCommit() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	commit := strings.TrimSpace(string(head))
	if status, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(status)) > 0 {
		commit += "+changes"
	}
	return commit
}
