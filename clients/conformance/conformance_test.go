package conformance_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// EnvLanguages narrows TestConformance to some languages (a comma-separated
// list of go, python, python-aio, typescript): a knob for developers working
// on one client. `make test` and CI leave it unset and run every language.
const EnvLanguages = "LEDGER_CONFORMANCE_LANGS"

// EnvOnly narrows every runner to some scenarios (comma-separated names);
// it is passed to the runners as is. A knob for developers, like
// EnvLanguages.
const EnvOnly = "LEDGER_CONFORMANCE_ONLY"

// runnerTimeout bounds one language's run of every scenario. The scenarios
// take about a minute; the rest is room for a busy machine and, for Go and
// TypeScript, compiling the runner.
const runnerTimeout = 10 * time.Minute

// language is one client's runner: the command, run in dir (relative to
// clients/), and the file whose presence says the runner exists.
type language struct {
	name    string
	dir     string
	command []string
	// exists reports whether the runner is in this checkout.
	exists func(clients string) bool
	// private runs the command in a copy of dir (its node_modules linked,
	// not copied), because it rebuilds files there that other tests read
	// at the same time: `npm run conformance` compiles clients/typescript
	// into dist/, from which clients/crosslang's tests run node.
	private bool
}

// python is the distribution's interpreter, which sees the distribution's
// grpcio and protobuf (scripts/deps.sh python installs them).
const python = "/usr/bin/python3"

var languages = []language{
	{name: "go", dir: "go", command: []string{"go", "run", "./internal/conformance"},
		exists: fileExists("go/internal/conformance")},
	{name: "python", dir: "python", command: []string{python, "tests/conformance_runner.py"},
		exists: fileExists("python/tests/conformance_runner.py")},
	{name: "python-aio", dir: "python", command: []string{python, "tests/conformance_runner.py", "--aio"},
		exists: fileExists("python/tests/conformance_runner.py")},
	{name: "typescript", dir: "typescript", command: []string{"npm", "run", "--silent", "conformance"},
		exists: npmScriptExists("typescript", "conformance"), private: true},
}

func fileExists(rel string) func(string) bool {
	return func(clients string) bool {
		_, err := os.Stat(filepath.Join(clients, rel))
		return err == nil
	}
}

func npmScriptExists(dir, script string) func(string) bool {
	return func(clients string) bool {
		data, err := os.ReadFile(filepath.Join(clients, dir, "package.json"))
		if err != nil {
			return false
		}
		var pkg struct {
			Scripts map[string]string `json:"scripts"`
		}
		return json.Unmarshal(data, &pkg) == nil && pkg.Scripts[script] != ""
	}
}

// clientsDir is clients/, found from the scenarios' directory.
func clientsDir() string { return filepath.Dir(filepath.Dir(scenariosDir())) }

// TestScenarioFiles checks every scenario file on its own: valid JSON with
// the fields the harness reads, its name the file's, one known operation
// per step. It fails fast on a broken file, before any runner starts.
func TestScenarioFiles(t *testing.T) {
	t.Parallel()
	scenarios, err := loadScenarios()
	require.NoError(t, err)
	for _, s := range scenarios {
		t.Logf("%s: %s", s.Name, s.Summary)
	}
}

// report is one line of a runner's output.
type report struct {
	Scenario string `json:"scenario"`
	OK       bool   `json:"ok"`
	Error    string `json:"error"`
}

// TestConformance runs every scenario in every language's runner, each
// against a cluster of its own, and fails TestConformance/<language>/<scenario>
// unless that runner reported the scenario ok. A runner that is missing, or
// that does not report a scenario, fails: no scenario is skipped.
func TestConformance(t *testing.T) {
	t.Parallel()
	scenarios, err := loadScenarios()
	require.NoError(t, err)
	if only := os.Getenv(EnvOnly); only != "" {
		names := strings.Split(only, ",")
		scenarios = slices.DeleteFunc(scenarios, func(s scenario) bool { return !slices.Contains(names, s.Name) })
		require.NotEmpty(t, scenarios, "%s=%s names no scenario", EnvOnly, only)
	}
	selected := languages
	if langs := os.Getenv(EnvLanguages); langs != "" {
		names := strings.Split(langs, ",")
		selected = slices.DeleteFunc(slices.Clone(languages), func(l language) bool { return !slices.Contains(names, l.name) })
		require.NotEmpty(t, selected, "%s=%s names no language", EnvLanguages, langs)
		t.Logf("%s=%s: only these languages run (CI runs all)", EnvLanguages, langs)
	}
	for _, lang := range selected {
		t.Run(lang.name, func(t *testing.T) {
			t.Parallel()
			runLanguage(t, lang, scenarios)
		})
	}
}

// runLanguage starts a cluster, runs the language's runner over it, and
// turns its reports into one subtest per scenario.
func runLanguage(t *testing.T, lang language, scenarios []scenario) {
	t.Helper()
	clients := clientsDir()
	require.True(t, lang.exists(clients),
		"the %s conformance runner is missing from this checkout (%s in clients/%s): every client must run every scenario",
		lang.name, strings.Join(lang.command, " "), lang.dir)

	prefix := "conf-" + lang.name + "-"
	c := startCluster(t)
	for _, s := range scenarios {
		settings, err := namespaceSettings(s.NamespaceSettings)
		require.NoError(t, err)
		_, err = c.control.Store.CreateNamespace(context.Background(), prefix+s.Name, settings, "conformance")
		require.NoError(t, err, "namespace of %s", s.Name)
	}
	controlURL := startControl(t, c, prefix)

	env := []string{
		"LEDGER_CONFORMANCE_SCENARIOS=" + scenariosDir(),
		"LEDGER_CONFORMANCE_CONTROL=" + controlURL,
		"LEDGER_ADDR=" + c.proxy.Addr(),
		"LEDGER_DIRECT_ADDR=" + c.replicas["a"].addr,
		"LEDGER_REPLICAS=" + c.replicas["a"].addr + "," + c.replicas["b"].addr,
		"LEDGER_CONFORMANCE_PREFIX=" + prefix,
		"PYTHONPATH=" + filepath.Join(clients, "python", "src") + string(os.PathListSeparator) + filepath.Join(clients, "python", "gen"),
		"PYTHONDONTWRITEBYTECODE=1",
	}
	reports, stderr, runErr := runRunner(t, lang, env)

	failed := false
	for _, s := range scenarios {
		ok := t.Run(s.Name, func(t *testing.T) {
			r, found := reports[s.Name]
			switch {
			case !found:
				t.Fatalf("the %s runner did not report this scenario (a runner cannot skip one); it exited with %v", lang.name, runErr)
			case !r.OK:
				t.Fatalf("%s: %s", s.Summary, r.Error)
			}
		})
		failed = failed || !ok
	}
	for name := range reports {
		if !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.Name == name }) {
			t.Errorf("the %s runner reported %q, which is not a scenario file", lang.name, name)
			failed = true
		}
	}
	if runErr != nil && !failed {
		t.Errorf("the %s runner reported every scenario ok, but exited with %v", lang.name, runErr)
		failed = true
	}
	if failed {
		t.Logf("%s runner's stderr:\n%s", lang.name, stderr)
	}
}

// runRunner runs a language's runner to completion and returns its reports
// by scenario, its stderr, and its error. A line of stdout that is not a
// report fails the test.
func runRunner(t *testing.T, lang language, env []string) (map[string]report, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runnerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, lang.command[0], lang.command[1:]...)
	cmd.Dir = filepath.Join(clientsDir(), lang.dir)
	if lang.private {
		cmd.Dir = privateCopy(t, cmd.Dir)
	}
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	started := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: no answer within %s", err, runnerTimeout)
	}
	t.Logf("%s runner: %s in %s", lang.name, strings.Join(lang.command, " "), time.Since(started).Round(time.Millisecond))

	reports := map[string]report{}
	scanner := bufio.NewScanner(&stdout)
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		line := bytes.TrimSpace(scanner.Bytes())
		if len(line) == 0 {
			continue
		}
		var r report
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if decodeErr := dec.Decode(&r); decodeErr != nil || r.Scenario == "" {
			t.Errorf("the %s runner printed a line that is not a report (logs go to stderr): %q", lang.name, line)
			continue
		}
		if _, dup := reports[r.Scenario]; dup {
			t.Errorf("the %s runner reported %q twice", lang.name, r.Scenario)
		}
		reports[r.Scenario] = r
	}
	return reports, stderr.String(), err
}

// privateCopy copies a client's directory into a temporary one, without
// its build output (dist) and with its node_modules linked, and returns
// the copy's path.
func privateCopy(t *testing.T, dir string) string {
	t.Helper()
	copyDir := filepath.Join(t.TempDir(), filepath.Base(dir))
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		target := filepath.Join(copyDir, rel)
		switch {
		case rel == "node_modules":
			if err := os.Symlink(path, target); err != nil {
				return err
			}
			return fs.SkipDir
		case rel == "dist":
			return fs.SkipDir
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, 0o644)
		}
		return nil
	})
	require.NoError(t, err, "copy %s", dir)
	return copyDir
}
