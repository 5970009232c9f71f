package chaos

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// finalEntry is a key's entry at the end of a scenario.
type finalEntry struct {
	state  string
	token  int64
	result string
}

// tokenRow is a key's token in one row of an ordered listing.
type tokenRow struct {
	key   string
	token int64
}

// ledgerState is what the checker reads after a scenario: the ledger, its
// events and both sinks.
type ledgerState struct {
	entries   map[string]finalEntry
	events    []eventRow
	fenced    map[string]finalEntry // state unused
	fencedLog []tokenRow
	control   []tokenRow
	stuck     int
}

type eventRow struct {
	key   string
	kind  string
	token int64
}

// readState reads the namespace's final state with SQL.
func readState(ctx context.Context, db pgxQuerier, namespace string) (ledgerState, error) {
	st := ledgerState{entries: map[string]finalEntry{}, fenced: map[string]finalEntry{}}
	rows, _ := db.Query(ctx, query("check_entries"), namespace)
	var key, state string
	var token int64
	var result []byte
	if _, err := pgx.ForEachRow(rows, []any{&key, &state, &token, &result}, func() error {
		st.entries[key] = finalEntry{state: state, token: token, result: string(result)}
		return nil
	}); err != nil {
		return st, fmt.Errorf("read entries: %w", err)
	}
	rows, _ = db.Query(ctx, query("check_events"), namespace)
	var kind string
	if _, err := pgx.ForEachRow(rows, []any{&key, &kind, &token}, func() error {
		st.events = append(st.events, eventRow{key: key, kind: kind, token: token})
		return nil
	}); err != nil {
		return st, fmt.Errorf("read events: %w", err)
	}
	rows, _ = db.Query(ctx, query("check_fenced"), namespace)
	var value string
	if _, err := pgx.ForEachRow(rows, []any{&key, &token, &value}, func() error {
		st.fenced[key] = finalEntry{token: token, result: value}
		return nil
	}); err != nil {
		return st, fmt.Errorf("read the fenced sink: %w", err)
	}
	var err error
	if st.fencedLog, err = readTokenRows(ctx, db, "check_fenced_log", namespace); err != nil {
		return st, err
	}
	if st.control, err = readTokenRows(ctx, db, "check_control", namespace); err != nil {
		return st, err
	}
	if err := db.QueryRow(ctx, query("check_stuck")).Scan(&st.stuck); err != nil {
		return st, fmt.Errorf("count stuck sessions: %w", err)
	}
	return st, nil
}

// pgxQuerier is what readState needs of a pool.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func readTokenRows(ctx context.Context, db pgxQuerier, name, namespace string) ([]tokenRow, error) {
	rows, _ := db.Query(ctx, query(name), namespace)
	var r tokenRow
	var out []tokenRow
	if _, err := pgx.ForEachRow(rows, []any{&r.key, &r.token}, func() error {
		out = append(out, r)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// anomalies collects the checker's findings, with a few examples of each.
type anomalies struct {
	examples []string
}

// notef records an example (the first 20 only).
func (a *anomalies) notef(format string, args ...any) {
	if len(a.examples) < 20 {
		a.examples = append(a.examples, fmt.Sprintf(format, args...))
	}
}

// fencedMethods are the calls that act under a lease.
var fencedMethods = []string{"Heartbeat", "Complete", "Fail", "Release"}

// checkDuplicates counts keys with more than one accepted completion (two
// 'completed' events) and token epochs with more than one accepted fenced
// write (two fenced_log rows with the same key and token).
func checkDuplicates(st ledgerState, a *anomalies) Duplicates {
	var d Duplicates
	completions := map[string]int{}
	for _, e := range st.events {
		if e.kind == "completed" {
			completions[e.key]++
		}
	}
	for key, n := range completions {
		if n > 1 {
			d.LedgerCompletions++
			a.notef("duplicate: key %s completed %d times", key, n)
		}
	}
	epochs := map[tokenRow]int{}
	for _, r := range st.fencedLog {
		epochs[r]++
	}
	for r, n := range epochs {
		if n > 1 {
			d.FencedEpochs++
			a.notef("duplicate: the fenced sink accepted %d writes for key %s token %d", n, r.key, r.token)
		}
	}
	d.Total = d.LedgerCompletions + d.FencedEpochs
	return d
}

// checkLost compares what was acknowledged with what the ledger (by SQL
// and through the API) and the fenced sink hold at the end.
func checkLost(ops []Op, st ledgerState, api map[string]finalEntry, a *anomalies) Lost {
	var l Lost
	matches := func(key string, token int64, value string) bool {
		e, ok := st.entries[key]
		return ok && e.state == "completed" && e.token == token && e.result == value
	}
	for _, op := range ops {
		if op.Class != ClassOK {
			continue
		}
		switch {
		case op.Method == "Complete":
			if !matches(op.Key, op.Token, op.Value) {
				l.Completes++
				a.notef("lost: Complete of %s token %d was acknowledged, the ledger holds %+v", op.Key, op.Token, st.entries[op.Key])
			}
		case op.Method == "Reserve" && op.Reply == "completed", op.Method == MethodDo:
			if !matches(op.Key, op.Token, op.Value) {
				l.Results++
				a.notef("lost: %s of %s returned token %d result %q, the ledger holds %+v", op.Method, op.Key, op.Token, op.Value, st.entries[op.Key])
			}
		}
	}
	for key, e := range st.entries {
		if e.state != "completed" {
			continue
		}
		if f, ok := st.fenced[key]; !ok || f.token != e.token || f.result != e.result {
			l.Effects++
			a.notef("lost effect: %s completed with token %d, the fenced sink holds token %d %q", key, e.token, f.token, f.result)
		}
		if got := api[key]; got != e {
			l.APIMismatches++
			a.notef("api: Lookup of %s says %+v, SQL says %+v", key, got, e)
		}
	}
	l.Total = l.Completes + l.Results + l.Effects + l.APIMismatches
	return l
}

// checkStale counts calls accepted with a superseded token, three ways:
// in the history (a call under token t succeeded although it was invoked
// after a Reserve had returned a newer token for the key), in the events
// (a completion with a lower token than a grant before it), and in the
// fenced sink (an accepted write with a lower token than one it accepted
// before).
func checkStale(ops []Op, st ledgerState, a *anomalies) Stale {
	var s Stale
	type grant struct {
		token   int64
		invoked int64 // when the Reserve was sent
		at      int64 // when its answer arrived
	}
	grants := map[string][]grant{}
	for _, op := range ops {
		if op.Method == "Reserve" && op.Class == ClassOK && op.Reply == "acquired" {
			grants[op.Key] = append(grants[op.Key], grant{op.Token, op.Start, op.End})
		}
	}
	// A key's tokens only grow, failovers included: a grant asked for after
	// another's answer arrived carries a higher token.
	for key, gs := range grants {
		for _, earlier := range gs {
			for _, later := range gs {
				if later.invoked > earlier.at && later.token <= earlier.token {
					s.Regressions++
					a.notef("stale: %s was granted token %d after token %d had been", key, later.token, earlier.token)
				}
			}
		}
	}
	for _, op := range ops {
		if op.Class != ClassOK || !slices.Contains(fencedMethods, op.Method) {
			continue
		}
		for _, g := range grants[op.Key] {
			if g.token > op.Token && g.at < op.Start {
				s.History++
				a.notef("stale: %s of %s with token %d succeeded, invoked after token %d was granted", op.Method, op.Key, op.Token, g.token)
				break
			}
		}
	}
	maxGrant := map[string]int64{}
	for _, e := range st.events {
		if e.kind == "completed" {
			if e.token < maxGrant[e.key] {
				s.Events++
				a.notef("stale: %s completed with token %d after token %d was granted", e.key, e.token, maxGrant[e.key])
			}
			continue
		}
		maxGrant[e.key] = max(maxGrant[e.key], e.token)
	}
	s.Sink = len(staleWrites(st.fencedLog))
	for _, r := range staleWrites(st.fencedLog) {
		a.notef("stale: the fenced sink accepted %s token %d after a higher token", r.key, r.token)
	}
	s.Total = s.History + s.Events + s.Sink + s.Regressions
	return s
}

// staleWrites returns the writes (in key, then sink order) whose token is
// lower than that of an earlier write of the same key.
func staleWrites(rows []tokenRow) []tokenRow {
	var stale []tokenRow
	highest := map[string]int64{}
	for _, r := range rows {
		if r.token < highest[r.key] {
			stale = append(stale, r)
		}
		highest[r.key] = max(highest[r.key], r.token)
	}
	return stale
}

// checkControl measures the unfenced control sink: what the effects would
// have been without fencing.
func checkControl(st ledgerState) Control {
	c := Control{Writes: len(st.control)}
	perKey := map[string]int{}
	for _, r := range st.control {
		perKey[r.key]++
	}
	c.Keys = len(perKey)
	for _, n := range perKey {
		if n > 1 {
			c.KeysRewritten++
		}
	}
	staleKeys := map[string]bool{}
	for _, r := range staleWrites(st.control) {
		c.StaleWrites++
		staleKeys[r.key] = true
	}
	c.Duplicates = len(staleKeys)
	return c
}

// drainFailures counts the RPC attempts that were in flight when a
// ledgerd was sent SIGTERM and failed during its drain (UNAVAILABLE,
// CANCELED, INTERNAL or UNKNOWN). (An attempt without an outcome belongs
// to a worker process that was killed later, not to the drain.)
func drainFailures(ops []Op, drains []time.Time, a *anomalies) int {
	failed := 0
	drainTime := int64(ledgerdShutdownTimeout + 5*time.Second)
	for _, op := range ops {
		if !isRPC(op.Method) {
			continue
		}
		switch op.Code {
		case "UNAVAILABLE", "CANCELED", "INTERNAL", "UNKNOWN":
		default:
			continue
		}
		for _, d := range drains {
			t := d.UnixNano()
			if op.Start < t && op.End > t && op.End <= t+drainTime {
				failed++
				a.notef("drain: %s of %s by %s failed with %s, in flight at SIGTERM", op.Method, op.Key, op.Worker, op.Code)
				break
			}
		}
	}
	return failed
}

// lookupAll reads every completed key through the API (Lookup), with a
// few calls at a time.
func lookupAll(ctx context.Context, addr string, keys []string, namespace string) (map[string]finalEntry, error) {
	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
	if err != nil {
		return nil, err
	}
	defer func() { _ = client.Close() }()
	out := make(map[string]finalEntry, len(keys))
	var mu sync.Mutex
	var errs []error
	next := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for key := range next {
				callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				response, err := client.Lookup(callCtx, &ledgerv1.LookupRequest{Namespace: namespace, Key: key})
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					e := response.GetEntry()
					out[key] = finalEntry{state: stateName(e.GetState()), token: e.GetFencingToken(), result: string(e.GetResult())}
				}
				mu.Unlock()
			}
		})
	}
	for _, k := range keys {
		next <- k
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return out, fmt.Errorf("lookup of %d keys failed, first: %w", len(errs), errs[0])
	}
	return out, nil
}

// stateName is the entries table's name of a state.
func stateName(s ledgerv1.State) string {
	switch s {
	case ledgerv1.State_STATE_LEASED:
		return "leased"
	case ledgerv1.State_STATE_COMPLETED:
		return "completed"
	case ledgerv1.State_STATE_FAILED:
		return "failed"
	case ledgerv1.State_STATE_RELEASED:
		return "released"
	default: // no such row: PURGED is a deleted one, UNSPECIFIED none
		return s.String()
	}
}

// measureRecovery fills each fault's recovery times from the successful
// Completes: Healed → the first one, and → the first 500ms window whose
// rate is 90% of the rate in the two seconds before the fault (not
// counting time before the previous fault healed). A FromStart fault's
// times run from its Start, and are searched from the start of its outage:
// the longest gap between two successful Completes that ends after the
// fault (Completes answered just after a crash were committed before it).
func measureRecovery(ops []Op, faults []Fault, started, ended time.Time) {
	var okAt []int64
	for _, op := range ops {
		if op.Method == "Complete" && op.Class == ClassOK {
			okAt = append(okAt, op.End)
		}
	}
	slices.Sort(okAt)
	count := func(from, to int64) int { // successes in [from, to)
		return sort.Search(len(okAt), func(i int) bool { return okAt[i] >= to }) -
			sort.Search(len(okAt), func(i int) bool { return okAt[i] >= from })
	}
	const window, step = int64(500 * time.Millisecond), int64(50 * time.Millisecond)
	for i := range faults {
		f := &faults[i]
		limit := ended.UnixNano()
		if i+1 < len(faults) {
			limit = faults[i+1].Start.UnixNano()
		}
		// origin is where the searches start, zero what the times count from.
		origin, zero := f.Healed.UnixNano(), f.Healed.UnixNano()
		if f.FromStart {
			zero = f.Start.UnixNano()
			origin = outageStart(okAt, zero, limit)
		}
		if j := sort.Search(len(okAt), func(j int) bool { return okAt[j] > origin }); j < len(okAt) && okAt[j] < limit {
			f.FirstSuccessSeconds = seconds(max(0, okAt[j]-zero))
		}
		from := max(f.Start.UnixNano()-int64(2*time.Second), started.UnixNano())
		if i > 0 {
			from = max(from, faults[i-1].Healed.UnixNano())
		}
		span := f.Start.UnixNano() - from
		if span < window {
			continue
		}
		want := 0.9 * float64(count(from, f.Start.UnixNano())) * float64(window) / float64(span)
		if want <= 0 {
			continue
		}
		for t := origin; t+window <= limit; t += step {
			if float64(count(t, t+window)) >= want {
				f.Rate90Seconds = seconds(max(0, t-zero))
				break
			}
		}
	}
}

// outageStart is the start of the longest gap between successes (okAt,
// sorted) that ends in [from, limit): the last success before it. It is
// from when there is no success in [from, limit).
func outageStart(okAt []int64, from, limit int64) int64 {
	j := sort.Search(len(okAt), func(j int) bool { return okAt[j] >= from })
	start, longest := from, int64(-1)
	for ; j < len(okAt) && okAt[j] < limit; j++ {
		begin := from
		if j > 0 {
			begin = okAt[j-1]
		}
		if gap := okAt[j] - begin; gap > longest {
			start, longest = begin, gap
		}
	}
	return start
}

func seconds(nanos int64) *float64 {
	s := float64(nanos) / 1e9
	return &s
}

// recoveryByKind summarizes the recovery of each kind of fault, for the
// nemeses of several kinds; nil for the others.
func recoveryByKind(faults []Fault) map[string]Recovery {
	kinds := map[string][]Fault{}
	for _, f := range faults {
		if f.Kind != "" {
			kinds[f.Kind] = append(kinds[f.Kind], f)
		}
	}
	if len(kinds) == 0 {
		return nil
	}
	by := make(map[string]Recovery, len(kinds))
	for kind, fs := range kinds {
		r := summarizeRecovery(fs)
		r.Faults = len(fs)
		by[kind] = r
	}
	return by
}

// summarizeRecovery gives the median and the maximum of each recovery
// time over the faults, and how many faults had none.
func summarizeRecovery(faults []Fault) Recovery {
	var first, rate []float64
	var r Recovery
	for _, f := range faults {
		if f.FirstSuccessSeconds != nil {
			first = append(first, *f.FirstSuccessSeconds)
		} else {
			r.FirstSuccessMissing++
		}
		if f.Rate90Seconds != nil {
			rate = append(rate, *f.Rate90Seconds)
		} else {
			r.Rate90Missing++
		}
	}
	r.FirstSuccessMedian, r.FirstSuccessMax = medianMax(first)
	r.Rate90Median, r.Rate90Max = medianMax(rate)
	return r
}

func medianMax(xs []float64) (*float64, *float64) {
	if len(xs) == 0 {
		return nil, nil
	}
	slices.Sort(xs)
	median, maximum := xs[len(xs)/2], xs[len(xs)-1]
	return &median, &maximum
}

// countOps fills the operation counts and the status-code histogram.
func countOps(ops []Op, r *ScenarioReport) {
	r.ByMethod = map[string]OpCounts{}
	r.Codes = map[string]int{}
	for _, op := range ops {
		m := r.ByMethod[op.Method]
		m.add(op.Class)
		r.ByMethod[op.Method] = m
		r.Codes[op.Method+" "+op.Code]++
		if isRPC(op.Method) {
			r.Ops.add(op.Class)
		}
		if op.Code == "ABORTED" || op.Code == "FENCED" {
			r.RefusedStale++
		}
		if isRPC(op.Method) && (op.Code == "INTERNAL" || op.Code == "UNKNOWN") {
			r.ServerErrors++
		}
	}
}

// isRPC tells the RPC attempts from the Do calls and the sink writes.
func isRPC(method string) bool {
	return method != MethodDo && method != MethodSinkControl && method != MethodSinkFenced
}

func (c *OpCounts) add(class Class) {
	c.Attempted++
	switch class {
	case ClassOK:
		c.OK++
	case ClassFailed:
		c.Failed++
	default:
		c.Indeterminate++
	}
}

// check reads the final state and judges the scenario.
func (s *scenarioRun) check(ctx context.Context, faults []Fault, started, ended time.Time) (ScenarioReport, error) {
	ops := s.history.Ops()
	st, err := readState(ctx, s.pool, s.load.Namespace)
	if err != nil {
		return ScenarioReport{}, err
	}
	var completed []string
	for key, e := range st.entries {
		if e.state == "completed" {
			completed = append(completed, key)
		}
	}
	api, err := lookupAll(ctx, s.replicas[0].Addr(), completed, s.load.Namespace)
	if err != nil {
		return ScenarioReport{}, fmt.Errorf("read the ledger through the API: %w", err)
	}
	measureRecovery(ops, faults, started, ended)

	var a anomalies
	var logs []string
	for _, l := range s.replicas {
		logs = append(logs, l.LogPath())
	}
	overruns, err := deadlineOverruns(logs, s.load.Namespace, &a)
	if err != nil {
		return ScenarioReport{}, fmt.Errorf("read ledgerd's request log: %w", err)
	}
	coalesced, err := coalescing(logs)
	if err != nil {
		return ScenarioReport{}, fmt.Errorf("read ledgerd's serving lines: %w", err)
	}
	r := ScenarioReport{
		Name:          s.name,
		Namespace:     s.load.Namespace,
		Seconds:       ended.Sub(started).Seconds(),
		Cycles:        len(completed),
		Keys:          len(st.entries),
		Faults:        len(faults),
		Duplicates:    checkDuplicates(st, &a),
		Lost:          checkLost(ops, st, api, &a),
		StaleAccepted: checkStale(ops, st, &a),
		Control:       checkControl(st),
		DrainFailures: drainFailures(ops, s.drains, &a),
		StuckSessions: st.stuck,
		Overruns:      overruns,
		Coalescing:    coalesced,
		Recovery:      summarizeRecovery(faults),
		ByKind:        recoveryByKind(faults),
		FaultLog:      faults,
	}
	countOps(ops, &r)
	r.Failures = s.judge(r)
	r.Passed = len(r.Failures) == 0
	r.Examples = a.examples
	return r, nil
}

// judge lists why the scenario fails; none means it passed.
func (s *scenarioRun) judge(r ScenarioReport) []string {
	var failures []string
	fail := func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }
	if r.Duplicates.Total > 0 {
		fail("%d duplicates", r.Duplicates.Total)
	}
	if r.Lost.Total > 0 {
		fail("%d lost", r.Lost.Total)
	}
	if r.StaleAccepted.Total > 0 {
		fail("%d stale calls accepted", r.StaleAccepted.Total)
	}
	if r.DrainFailures > 0 {
		fail("%d calls in flight failed during a graceful drain", r.DrainFailures)
	}
	if r.ServerErrors > 0 {
		fail("%d calls failed with INTERNAL or UNKNOWN: a fault must give UNAVAILABLE or DEADLINE_EXCEEDED", r.ServerErrors)
	}
	if r.Overruns > 0 {
		fail("%d calls finished after their deadline", r.Overruns)
	}
	if r.StuckSessions > 0 {
		fail("%d ledgerd database sessions stuck in a statement", r.StuckSessions)
	}
	for _, f := range r.FaultLog {
		if f.Error != "" {
			fail("fault %q: %s", f.Detail, f.Error)
		}
	}
	if s.name == "pause" && r.Control.Duplicates == 0 {
		fail("the control sink shows no duplicate: no pause caught a worker in its work, so the run proves nothing")
	}
	if want := s.minFaults(); r.Cycles < s.cfg.Cycles || r.Faults < want {
		fail("too small: %d cycles and %d faults, want %d and %d (MaxDuration %s)", r.Cycles, r.Faults, s.cfg.Cycles, want, s.cfg.MaxDuration)
	}
	return failures
}
