package conformance_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// scenariosDir is clients/conformance/scenarios, found from this file.
func scenariosDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "scenarios")
}

// scenario is the part of a scenario file that the harness reads itself;
// the runners read the rest.
type scenario struct {
	Name              string          `json:"name"`
	Summary           string          `json:"summary"`
	NamespaceSettings map[string]int  `json:"namespace_settings"`
	Client            json.RawMessage `json:"client"`
	Steps             []step          `json:"steps"`
}

// step is one step: a single operation key, plus "expect" or "within_ms"
// where the operation takes them.
type step map[string]json.RawMessage

// operations lists every step operation, with the other keys it may carry.
var operations = map[string][]string{
	"do":             {"expect"},
	"do_batch":       {"expect"},
	"repeat":         nil,
	"control":        nil,
	"sleep_ms":       nil,
	"expect_breaker": {"within_ms"},
	"expect_stats":   nil,
	"flush":          {"expect"},
	"expect_entry":   nil,
}

// namespaceSettings turns a scenario's namespace_settings into the
// namespace's settings.
func namespaceSettings(settings map[string]int) (ledger.NamespaceUpdate, error) {
	var u ledger.NamespaceUpdate
	for name, value := range settings {
		ms := time.Duration(value) * time.Millisecond
		switch name {
		case "max_result_bytes":
			u.MaxResultBytes = &value
		case "max_attempts":
			u.MaxAttempts = &value
		case "default_lease_ttl_ms":
			u.DefaultLeaseTTL = &ms
		case "max_lease_ttl_ms":
			u.MaxLeaseTTL = &ms
		default:
			return u, fmt.Errorf("namespace_settings: unknown setting %q (known: max_result_bytes, max_attempts, default_lease_ttl_ms, max_lease_ttl_ms)", name)
		}
	}
	return u, nil
}

// loadScenarios reads and checks every scenario file, sorted by name.
func loadScenarios() ([]scenario, error) {
	files, err := filepath.Glob(filepath.Join(scenariosDir(), "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no scenario in %s", scenariosDir())
	}
	var scenarios []scenario
	for _, file := range files {
		s, err := loadScenario(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(file), err)
		}
		scenarios = append(scenarios, s)
	}
	slices.SortFunc(scenarios, func(a, b scenario) int { return strings.Compare(a.Name, b.Name) })
	return scenarios, nil
}

func loadScenario(file string) (scenario, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return scenario{}, err
	}
	var s scenario
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, err
	}
	if want := strings.TrimSuffix(filepath.Base(file), ".json"); s.Name != want {
		return s, fmt.Errorf("name %q: must be the file's name, %q", s.Name, want)
	}
	if s.Summary == "" {
		return s, fmt.Errorf("summary is required")
	}
	if _, err := namespaceSettings(s.NamespaceSettings); err != nil {
		return s, err
	}
	var client struct {
		Target string `json:"target"`
	}
	if len(s.Client) > 0 {
		if err := json.Unmarshal(s.Client, &client); err != nil {
			return s, fmt.Errorf("client: %w", err)
		}
	}
	if !slices.Contains([]string{"", "proxy", "direct", "replicas"}, client.Target) {
		return s, fmt.Errorf("client.target %q: must be proxy, direct or replicas", client.Target)
	}
	if len(s.Steps) == 0 {
		return s, fmt.Errorf("steps: at least one is required")
	}
	for i, st := range s.Steps {
		if err := checkStep(st); err != nil {
			return s, fmt.Errorf("step %d: %w", i+1, err)
		}
	}
	return s, nil
}

// checkStep checks that a step has exactly one known operation, and only
// the keys that operation takes.
func checkStep(st step) error {
	var op string
	for key := range st {
		if _, ok := operations[key]; ok {
			if op != "" {
				return fmt.Errorf("two operations, %q and %q: one per step", op, key)
			}
			op = key
		}
	}
	if op == "" {
		return fmt.Errorf("no known operation in %v", slices.Sorted(maps.Keys(st)))
	}
	for key := range st {
		if key != op && !slices.Contains(operations[op], key) {
			return fmt.Errorf("%s: unexpected key %q", op, key)
		}
	}
	if op == "repeat" {
		var r struct {
			Times int  `json:"times"`
			Step  step `json:"step"`
		}
		if err := json.Unmarshal(st[op], &r); err != nil {
			return fmt.Errorf("repeat: %w", err)
		}
		if r.Times < 1 {
			return fmt.Errorf("repeat: times must be at least 1, got %d", r.Times)
		}
		return checkStep(r.Step)
	}
	return nil
}
