// Command conformance is the Go runner of the clients' conformance suite
// (clients/conformance in the repository): it runs every scenario file
// (JSON) of $LEDGER_CONFORMANCE_SCENARIOS against live ledgerd replicas, one
// after another, each with a fresh ledgerclient.Client built from its
// "client" section, and prints one JSON line per scenario on stdout:
// {"scenario":...,"ok":true} or {"scenario":...,"ok":false,"error":"step 3
// (do k1): ..."}. Logs go to stderr. It exits 0 only if every scenario
// passed.
//
// The harness starts the replicas and the control server, and sets the
// environment (see clients/conformance/README.md):
//
//	go run ./internal/conformance
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// env is what the harness tells the runner.
type env struct {
	scenarios string // the scenarios' directory
	only      []string
	control   string // the control server's base URL
	prefix    string // the namespace prefix
	targets   map[string]string
}

func readEnv() (env, error) {
	e := env{
		scenarios: os.Getenv("LEDGER_CONFORMANCE_SCENARIOS"),
		control:   strings.TrimRight(os.Getenv("LEDGER_CONFORMANCE_CONTROL"), "/"),
		prefix:    os.Getenv("LEDGER_CONFORMANCE_PREFIX"),
		targets: map[string]string{
			"proxy":    os.Getenv("LEDGER_ADDR"),
			"direct":   os.Getenv("LEDGER_DIRECT_ADDR"),
			"replicas": os.Getenv("LEDGER_REPLICAS"),
		},
	}
	if e.scenarios == "" || e.control == "" {
		return e, fmt.Errorf("LEDGER_CONFORMANCE_SCENARIOS and LEDGER_CONFORMANCE_CONTROL must be set")
	}
	if e.prefix == "" {
		e.prefix = "conf-go-"
	}
	for _, name := range strings.Split(os.Getenv("LEDGER_CONFORMANCE_ONLY"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			e.only = append(e.only, name)
		}
	}
	return e, nil
}

// report is the line printed for one scenario.
type report struct {
	Scenario string `json:"scenario"`
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("conformance(go): ")
	e, err := readEnv()
	if err != nil {
		log.Print(err)
		os.Exit(2)
	}
	scenarios, err := loadScenarios(e.scenarios, e.only)
	if err != nil {
		log.Print(err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	failed := 0
	for _, s := range scenarios {
		started := time.Now()
		r := report{Scenario: s.Name, OK: true}
		if err := run(e, s); err != nil {
			r.OK, r.Error = false, err.Error()
			failed++
		}
		status := "ok"
		if !r.OK {
			status = "FAILED: " + r.Error
		}
		log.Printf("%s: %s in %s", s.Name, status, time.Since(started).Round(100*time.Millisecond))
		if err := out.Encode(r); err != nil {
			log.Fatal(err)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}

// loadScenarios reads the scenario files of dir, in name order, keeping
// those named in only (all when only is empty).
func loadScenarios(dir string, only []string) ([]scenario, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var scenarios []scenario
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var s scenario
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if s.Name == "" {
			s.Name = strings.TrimSuffix(filepath.Base(file), ".json")
		}
		if len(only) > 0 && !slices.Contains(only, s.Name) {
			continue
		}
		scenarios = append(scenarios, s)
	}
	return scenarios, nil
}
