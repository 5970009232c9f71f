package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
)

// scenario is one scenario file. Its steps are decoded one at a time, each
// by the operation that reads it.
type scenario struct {
	Name              string                       `json:"name"`
	Summary           string                       `json:"summary"`
	NamespaceSettings json.RawMessage              `json:"namespace_settings"` // the harness's
	Client            clientSection                `json:"client"`
	Steps             []map[string]json.RawMessage `json:"steps"`
}

// clientSection describes the scenario's client. Omitted fields take the
// client's defaults.
type clientSection struct {
	Target      string          `json:"target"`  // proxy (default), direct, replicas
	Breaker     json.RawMessage `json:"breaker"` // "off" or a breakerSection
	RetryBudget *struct {
		MaxTokens float64 `json:"max_tokens"`
		Ratio     float64 `json:"ratio"`
	} `json:"retry_budget"`
	MaxAttempts int    `json:"max_attempts"`
	Fallback    string `json:"fallback"`
}

type breakerSection struct {
	FailureThreshold int     `json:"failure_threshold"`
	FailureRatio     float64 `json:"failure_ratio"`
	WindowMS         int64   `json:"window_ms"`
	MinCalls         int     `json:"min_calls"`
	OpenForMS        int64   `json:"open_for_ms"`
}

// defaultDoTimeout bounds a do (or do_batch) whose step gives no timeout,
// so that a broken client fails its scenario instead of hanging the suite.
const defaultDoTimeout = 60 * time.Second

// newClient builds the client a scenario's section describes.
func newClient(e env, section clientSection) (*ledgerclient.Client, error) {
	name := cmp.Or(section.Target, "proxy")
	target, ok := e.targets[name]
	if !ok {
		return nil, fmt.Errorf("client: unknown target %q", name)
	}
	if target == "" {
		return nil, fmt.Errorf("client: the harness gave no address for target %q", name)
	}
	opts := []ledgerclient.Option{ledgerclient.WithInsecure()}
	switch {
	case len(section.Breaker) == 0:
	case string(section.Breaker) == `"off"`:
		opts = append(opts, ledgerclient.WithoutCircuitBreaker())
	default:
		var b breakerSection
		if err := strictDecode(section.Breaker, &b); err != nil {
			return nil, fmt.Errorf("client: breaker: %w", err)
		}
		opts = append(opts, ledgerclient.WithCircuitBreaker(ledgerclient.BreakerConfig{
			FailureThreshold: b.FailureThreshold,
			FailureRatio:     b.FailureRatio,
			Window:           time.Duration(b.WindowMS) * time.Millisecond,
			MinCalls:         b.MinCalls,
			OpenFor:          time.Duration(b.OpenForMS) * time.Millisecond,
		}))
	}
	if budget := section.RetryBudget; budget != nil {
		// A ratio of 0 takes the Go client's default (0.1), as every zero
		// field of its configurations does: a bucket that starts full with
		// max_tokens gives the same retries over a scenario's few calls.
		opts = append(opts, ledgerclient.WithRetryBudget(ledgerclient.RetryBudget{MaxTokens: budget.MaxTokens, Ratio: budget.Ratio}))
	}
	if section.MaxAttempts != 0 {
		opts = append(opts, ledgerclient.WithMaxAttempts(section.MaxAttempts))
	}
	if section.Fallback != "" {
		fallback, err := parseFallback(section.Fallback)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		opts = append(opts, ledgerclient.WithFallback(fallback))
	}
	return ledgerclient.New(target, opts...)
}

func parseFallback(name string) (ledgerclient.Fallback, error) {
	switch name {
	case ledgerclient.FailClosed.String():
		return ledgerclient.FailClosed, nil
	case ledgerclient.FailOpen.String():
		return ledgerclient.FailOpen, nil
	}
	return 0, fmt.Errorf("unknown fallback %q (fail_closed or fail_open)", name)
}

// run runs one scenario with a client of its own, closed at its end.
func run(e env, s scenario) (err error) {
	client, err := newClient(e, s.Client)
	if err != nil {
		return err
	}
	defer func() {
		if closeErr := client.Close(); closeErr != nil {
			// The scenario's own checks passed or failed already; a queue
			// Close could not record is worth a log line, not a failure.
			log.Printf("%s: close: %v", s.Name, closeErr)
		}
	}()
	r := &runner{client: client, control: newControl(e.control), namespace: e.prefix + s.Name}
	for i, step := range s.Steps {
		if err := r.step(context.Background(), step); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, describe(step), err)
		}
	}
	return nil
}

// runner runs the steps of one scenario.
type runner struct {
	client    *ledgerclient.Client
	control   *control
	namespace string
}

// step runs one step: its one operation, and its expectation.
func (r *runner) step(ctx context.Context, step map[string]json.RawMessage) error {
	op, err := operation(step)
	if err != nil {
		return err
	}
	spec, expect := step[op], step["expect"]
	switch op {
	case "do":
		return r.do(ctx, spec, expect)
	case "do_batch":
		return r.doBatch(ctx, spec, expect)
	case "repeat":
		return r.repeat(ctx, spec)
	case "control":
		var c struct {
			Path string          `json:"path"`
			Body json.RawMessage `json:"body"`
		}
		if err := strictDecode(spec, &c); err != nil {
			return err
		}
		return r.control.post(ctx, c.Path, c.Body)
	case "sleep_ms":
		var ms int64
		if err := strictDecode(spec, &ms); err != nil {
			return err
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return nil
	case "expect_breaker":
		return r.expectBreaker(spec, step["within_ms"])
	case "expect_stats":
		return r.expectStats(spec)
	case "flush":
		return r.flush(ctx, spec, expect)
	case "expect_entry":
		return r.expectEntry(ctx, spec)
	}
	return fmt.Errorf("unknown operation %q", op)
}

// operation returns the step's one operation key.
func operation(step map[string]json.RawMessage) (string, error) {
	var ops []string
	for k := range step {
		if k != "expect" && k != "within_ms" {
			ops = append(ops, k)
		}
	}
	if len(ops) != 1 {
		slices.Sort(ops)
		return "", fmt.Errorf("a step needs exactly one operation, found %v", ops)
	}
	return ops[0], nil
}

// workSpec is a step's work: what the work function does.
type workSpec struct {
	Result      *string `json:"result"`
	ResultBytes int     `json:"result_bytes"`
	Error       *string `json:"error"`
	Permanent   bool    `json:"permanent"`
	Steal       bool    `json:"steal"`
}

// workError is the error a scenario's work returns ({"error": ...}), so
// that the runner tells it from the client's own errors (kind work_error).
type workError struct{ message string }

func (e *workError) Error() string { return e.message }

// err is the error the work returns, nil if it returns a result.
func (w workSpec) err() error {
	if w.Error == nil {
		return nil
	}
	err := error(&workError{message: *w.Error})
	if w.Permanent {
		return ledgerclient.Permanent(err)
	}
	return err
}

// value is the result the work returns.
func (w workSpec) value() []byte {
	if w.ResultBytes > 0 {
		return bytes.Repeat([]byte("x"), w.ResultBytes)
	}
	if w.Result != nil {
		return []byte(*w.Result)
	}
	return nil
}

// outcomeExpect is the expectation of a do, or of one item of a do_batch.
type outcomeExpect struct {
	Outcome *string `json:"outcome"`
	Result  *string `json:"result"`
	Error   *string `json:"error"`
	WorkRan *bool   `json:"work_ran"`
}

func (r *runner) do(ctx context.Context, raw, rawExpect json.RawMessage) error {
	var spec struct {
		Key        string   `json:"key"`
		Work       workSpec `json:"work"`
		TimeoutMS  int64    `json:"timeout_ms"`
		LeaseTTLMS int64    `json:"lease_ttl_ms"`
		Fallback   string   `json:"fallback"`
	}
	if err := strictDecode(raw, &spec); err != nil {
		return err
	}
	var opts []ledgerclient.DoOption
	if spec.LeaseTTLMS > 0 {
		opts = append(opts, ledgerclient.WithLeaseTTL(time.Duration(spec.LeaseTTLMS)*time.Millisecond))
	}
	if spec.Fallback != "" {
		fallback, err := parseFallback(spec.Fallback)
		if err != nil {
			return err
		}
		opts = append(opts, ledgerclient.WithDoFallback(fallback))
	}
	var ran atomic.Bool
	work := func(ctx context.Context) ([]byte, error) {
		ran.Store(true)
		if spec.Work.Steal {
			// Another worker takes the lease over, with a higher token,
			// before this work returns.
			body, _ := json.Marshal(map[string]string{"namespace": r.namespace, "key": spec.Key})
			if err := r.control.post(ctx, "/steal", body); err != nil {
				return nil, fmt.Errorf("steal: %w", err)
			}
		}
		if err := spec.Work.err(); err != nil {
			return nil, err
		}
		return spec.Work.value(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout(spec.TimeoutMS))
	defer cancel()
	result, err := r.client.Do(ctx, r.namespace, spec.Key, work, opts...)
	if len(rawExpect) == 0 {
		return nil // a call made for its effect, e.g. a half-open probe
	}
	var expect outcomeExpect
	if err := strictDecode(rawExpect, &expect); err != nil {
		return fmt.Errorf("expect: %w", err)
	}
	if err := checkOutcome(expect, result, err); err != nil {
		return err
	}
	if expect.WorkRan != nil && *expect.WorkRan != ran.Load() {
		return fmt.Errorf("expected work_ran %t, got %t", *expect.WorkRan, ran.Load())
	}
	return nil
}

func (r *runner) doBatch(ctx context.Context, raw, rawExpect json.RawMessage) error {
	var spec struct {
		Items []struct {
			Key  string   `json:"key"`
			Work workSpec `json:"work"`
		} `json:"items"`
		TimeoutMS int64 `json:"timeout_ms"`
	}
	if err := strictDecode(raw, &spec); err != nil {
		return err
	}
	keys := make([]string, len(spec.Items))
	works := make(map[string]workSpec, len(spec.Items))
	for i, item := range spec.Items {
		keys[i] = item.Key
		works[item.Key] = item.Work
	}
	// The batch's work is one call for the keys this worker acquired: the
	// first error among them, else each one's result.
	work := func(_ context.Context, acquired []string) ([][]byte, error) {
		values := make([][]byte, len(acquired))
		for i, key := range acquired {
			if err := works[key].err(); err != nil {
				return nil, err
			}
			values[i] = works[key].value()
		}
		return values, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout(spec.TimeoutMS))
	defer cancel()
	results, err := r.client.DoBatch(ctx, r.namespace, keys, work)
	if err != nil {
		return fmt.Errorf("do batch: %w", err)
	}
	if len(rawExpect) == 0 {
		return nil
	}
	var expect []outcomeExpect
	if err := strictDecode(rawExpect, &expect); err != nil {
		return fmt.Errorf("expect: %w", err)
	}
	if len(results) != len(expect) {
		return fmt.Errorf("expected %d results, got %d", len(expect), len(results))
	}
	for i, want := range expect {
		if err := checkOutcome(want, results[i].Result, results[i].Err); err != nil {
			return fmt.Errorf("item %d (%s): %w", i, keys[i], err)
		}
	}
	return nil
}

// outcome names how a do ended: ran, replayed, ran_unguarded or error.
func outcome(result ledgerclient.Result, err error) string {
	switch {
	case err != nil:
		return "error"
	case result.Unguarded:
		return "ran_unguarded"
	case result.Replayed:
		return "replayed"
	}
	return "ran"
}

// checkOutcome compares a do's (or a batch item's) outcome with its
// expectation.
func checkOutcome(expect outcomeExpect, result ledgerclient.Result, err error) error {
	got := outcome(result, err)
	if expect.Outcome != nil && *expect.Outcome != got {
		if err != nil {
			return fmt.Errorf("expected outcome %s, got error %s: %w", *expect.Outcome, errorKind(err), err)
		}
		return fmt.Errorf("expected outcome %s, got %s", *expect.Outcome, got)
	}
	if expect.Error != nil {
		if err == nil {
			return fmt.Errorf("expected error %s, got outcome %s", *expect.Error, got)
		}
		if kind := errorKind(err); kind != *expect.Error {
			return fmt.Errorf("expected error %s, got %s: %w", *expect.Error, kind, err)
		}
	}
	if expect.Result != nil {
		if err != nil {
			return fmt.Errorf("expected result %q, got error %s: %w", *expect.Result, errorKind(err), err)
		}
		if string(result.Value) != *expect.Result {
			return fmt.Errorf("expected result %q, got %q", *expect.Result, result.Value)
		}
	}
	return nil
}

// errorKinds maps the client's errors to the contract's neutral kinds, in
// the order they are tried: a *CircuitOpenError also matches
// ErrUnavailable, so it comes first.
var errorKinds = []struct {
	sentinel error
	kind     string
}{
	{ledgerclient.ErrCircuitOpen, "circuit_open"},
	{ledgerclient.ErrFailed, "failed"},
	{ledgerclient.ErrLeaseLost, "lease_lost"},
	{ledgerclient.ErrDeadlineExceeded, "deadline_exceeded"},
	{context.DeadlineExceeded, "deadline_exceeded"},
	{ledgerclient.ErrUnavailable, "unavailable"},
	{ledgerclient.ErrInvalidArgument, "invalid_argument"},
	{ledgerclient.ErrFingerprintMismatch, "fingerprint_mismatch"},
	{ledgerclient.ErrPermissionDenied, "permission_denied"},
	{ledgerclient.ErrQuotaExceeded, "quota_exceeded"},
	{ledgerclient.ErrInProgress, "in_progress"},
}

// errorKind is the neutral name of err (the contract's KIND).
func errorKind(err error) string {
	var work *workError
	if errors.As(err, &work) {
		return "work_error"
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.sentinel) {
			return k.kind
		}
	}
	return fmt.Sprintf("other (%T)", err)
}

func (r *runner) repeat(ctx context.Context, raw json.RawMessage) error {
	var spec struct {
		Times int             `json:"times"`
		Step  json.RawMessage `json:"step"`
	}
	if err := strictDecode(raw, &spec); err != nil {
		return err
	}
	var template any
	if err := json.Unmarshal(spec.Step, &template); err != nil {
		return err
	}
	for i := range spec.Times {
		data, err := json.Marshal(substitute(template, fmt.Sprint(i)))
		if err != nil {
			return err
		}
		var step map[string]json.RawMessage
		if err := json.Unmarshal(data, &step); err != nil {
			return err
		}
		if err := r.step(ctx, step); err != nil {
			return fmt.Errorf("repetition %d (%s): %w", i, describe(step), err)
		}
	}
	return nil
}

// substitute replaces ${i} with i in every string of v.
func substitute(v any, i string) any {
	switch v := v.(type) {
	case string:
		return strings.ReplaceAll(v, "${i}", i)
	case []any:
		out := make([]any, len(v))
		for j, e := range v {
			out[j] = substitute(e, i)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = substitute(e, i)
		}
		return out
	}
	return v
}

// pollInterval is how often expect_breaker reads the breaker's state.
const pollInterval = 20 * time.Millisecond

func (r *runner) expectBreaker(raw, rawWithin json.RawMessage) error {
	var want string
	if err := strictDecode(raw, &want); err != nil {
		return err
	}
	within := 10 * time.Second
	if len(rawWithin) > 0 {
		var ms int64
		if err := strictDecode(rawWithin, &ms); err != nil {
			return fmt.Errorf("within_ms: %w", err)
		}
		within = time.Duration(ms) * time.Millisecond
	}
	deadline := time.Now().Add(within)
	for {
		state := r.client.BreakerState()
		if string(state) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("expected breaker %s within %s, it is %s", want, within, state)
		}
		time.Sleep(pollInterval)
	}
}

// stats returns the client's stats under the contract's names, as JSON
// would decode them.
func (r *runner) stats() map[string]any {
	s := r.client.Stats()
	return map[string]any{
		"calls":               float64(s.Calls),
		"retries":             float64(s.Retries),
		"retries_refused":     float64(s.RetriesRefused),
		"breaker_state":       string(s.BreakerState),
		"breaker_opens":       float64(s.BreakerOpens),
		"fail_open_runs":      float64(s.FailOpenRuns),
		"fail_open_recorded":  float64(s.FailOpenRecorded),
		"fail_open_discarded": float64(s.FailOpenDiscarded),
		"fail_open_pending":   float64(s.FailOpenPending),
	}
}

func (r *runner) expectStats(raw json.RawMessage) error {
	var spec map[string]json.RawMessage
	if err := strictDecode(raw, &spec); err != nil {
		return err
	}
	stats := r.stats()
	names := make([]string, 0, len(spec))
	for name := range spec {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		got, ok := stats[name]
		if !ok {
			return fmt.Errorf("stats have no %q", name)
		}
		if bytes.HasPrefix(bytes.TrimSpace(spec[name]), []byte("{")) {
			var bounds struct {
				Min *float64 `json:"min"`
				Max *float64 `json:"max"`
			}
			if err := strictDecode(spec[name], &bounds); err != nil {
				return fmt.Errorf("stats %s: %w", name, err)
			}
			n, _ := got.(float64)
			if bounds.Min != nil && n < *bounds.Min {
				return fmt.Errorf("expected stats %s >= %g, got %g (stats %v)", name, *bounds.Min, n, stats)
			}
			if bounds.Max != nil && n > *bounds.Max {
				return fmt.Errorf("expected stats %s <= %g, got %g (stats %v)", name, *bounds.Max, n, stats)
			}
			continue
		}
		var want any
		if err := json.Unmarshal(spec[name], &want); err != nil {
			return fmt.Errorf("stats %s: %w", name, err)
		}
		if !reflect.DeepEqual(want, got) {
			return fmt.Errorf("expected stats %s = %v, got %v (stats %v)", name, want, got, stats)
		}
	}
	return nil
}

func (r *runner) flush(ctx context.Context, raw, rawExpect json.RawMessage) error {
	var spec struct {
		TimeoutMS int64 `json:"timeout_ms"`
	}
	if err := strictDecode(raw, &spec); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(time.Duration(spec.TimeoutMS)*time.Millisecond, 20*time.Second))
	defer cancel()
	flushErr := r.client.Flush(ctx) // says how many are left; compared below
	if len(rawExpect) == 0 {
		return nil
	}
	var expect struct {
		Pending *int64 `json:"pending"`
	}
	if err := strictDecode(rawExpect, &expect); err != nil {
		return fmt.Errorf("expect: %w", err)
	}
	if pending := r.client.Stats().FailOpenPending; expect.Pending != nil && pending != *expect.Pending {
		return errors.Join(fmt.Errorf("expected pending %d after flush, got %d", *expect.Pending, pending), flushErr)
	}
	return nil
}

func (r *runner) expectEntry(ctx context.Context, raw json.RawMessage) error {
	var spec struct {
		Key         string  `json:"key"`
		State       *string `json:"state"`
		Result      *string `json:"result"`
		OwnerPrefix *string `json:"owner_prefix"`
		Attempts    *int    `json:"attempts"`
		Absent      bool    `json:"absent"`
	}
	if err := strictDecode(raw, &spec); err != nil {
		return err
	}
	e, err := r.control.entry(ctx, r.namespace, spec.Key)
	switch {
	case spec.Absent && errors.Is(err, errAbsent):
		return nil
	case spec.Absent && err == nil:
		return fmt.Errorf("expected no entry, found %+v", e)
	case errors.Is(err, errAbsent):
		return errors.New("expected an entry, found none")
	case err != nil:
		return err
	}
	if spec.State != nil && e.State != *spec.State {
		return fmt.Errorf("expected entry state %q, got %q (entry %s)", *spec.State, e.State, e)
	}
	if spec.Result != nil && (e.Result == nil || *e.Result != *spec.Result) {
		return fmt.Errorf("expected entry result %q (entry %s)", *spec.Result, e)
	}
	if spec.Attempts != nil && e.Attempts != *spec.Attempts {
		return fmt.Errorf("expected entry attempts %d, got %d (entry %s)", *spec.Attempts, e.Attempts, e)
	}
	if spec.OwnerPrefix != nil && !strings.HasPrefix(e.Owner, *spec.OwnerPrefix) {
		return fmt.Errorf("expected an owner starting with %q (entry %s)", *spec.OwnerPrefix, e)
	}
	return nil
}

// String shows an entry in messages.
func (e entry) String() string {
	result := "<none>"
	if e.Result != nil {
		result = fmt.Sprintf("%q", *e.Result)
	}
	return fmt.Sprintf("{state %s, owner %q, attempts %d, result %s}", e.State, e.Owner, e.Attempts, result)
}

// describe names a step in messages, e.g. "do k1".
func describe(step map[string]json.RawMessage) string {
	op, err := operation(step)
	if err != nil {
		return "a malformed step"
	}
	var named struct {
		Key  string `json:"key"`
		Path string `json:"path"`
	}
	if json.Unmarshal(step[op], &named) == nil && named.Key+named.Path != "" {
		return op + " " + named.Key + named.Path
	}
	if v := string(step[op]); len(v) < 40 {
		return op + " " + v
	}
	return op
}

// timeout is a step's timeout_ms, or defaultDoTimeout.
func timeout(ms int64) time.Duration {
	return cmp.Or(time.Duration(ms)*time.Millisecond, defaultDoTimeout)
}

// strictDecode decodes data into v, refusing fields v does not have: a
// scenario field this runner does not know fails the scenario instead of
// being ignored.
func strictDecode(data json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
