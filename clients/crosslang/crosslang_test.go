package crosslang_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// python is the distribution's interpreter, which sees the distribution's
// grpcio and protobuf (scripts/deps.sh python installs them).
const python = "/usr/bin/python3"

// testConfig lets the clients' tests ask for short leases.
var testConfig = ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 50 * time.Millisecond}}

// clientsDir is clients/, found from this file.
func clientsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// startLedgerd serves a fresh ledger on a loopback TCP port, as a deployed
// ledgerd would, and returns its address and the ledger's pool.
func startLedgerd(t *testing.T) (string, ledgertest.Bundle) {
	t.Helper()
	b := ledgertest.Store(t, testConfig)
	return ledgertest.ServeTCP(t, b.Store, server.Config{}), b
}

// startAuthLedgerd serves a fresh ledger with authentication on, as a
// secure ledgerd does (namespaces are not created on first use: the suites'
// namespace "auth-x" is created here, as an admin would), and returns the
// environment that the Python and TypeScript suites' auth tests read: its
// address, a worker token and a reader token for "auth-*".
func startAuthLedgerd(t *testing.T) []string {
	t.Helper()
	cfg := testConfig
	cfg.NoAutoCreateNamespaces = true
	b := ledgertest.Store(t, cfg)
	ctx := context.Background()
	_, err := b.Store.CreateNamespace(ctx, "auth-x", ledger.NamespaceUpdate{}, "crosslang test")
	require.NoError(t, err)
	issue := func(principal string, role ledger.Role) string {
		_, err := b.Store.GrantRole(ctx, ledger.RoleBinding{Principal: principal, NamespacePattern: "auth-*", Role: role}, "crosslang test")
		require.NoError(t, err)
		_, secret, err := b.Store.CreateToken(ctx, principal, "crosslang test", 0, "crosslang test")
		require.NoError(t, err)
		return secret
	}
	worker, reader := issue("crosslang-worker", ledger.RoleWorker), issue("crosslang-reader", ledger.RoleReader)
	addr := ledgertest.ServeTCP(t, b.Store, server.Config{Auth: ledgertest.RunAuth(t, b.Store)})
	return []string{"LEDGERD_AUTH_ADDR=" + addr, "LEDGERD_AUTH_TOKEN=" + worker, "LEDGERD_AUTH_READER_TOKEN=" + reader}
}

// requireRuntime skips, loudly, only when the language runtime itself is
// missing from the machine; everything else it needs is installed by
// scripts/deps.sh, and its absence fails the test.
func requireRuntime(t *testing.T, path, name string) {
	t.Helper()
	if _, err := exec.LookPath(path); err != nil {
		t.Skipf("SKIPPED LOUDLY: %s is not installed on this machine (%s not found); the %s client is NOT tested", name, path, name)
	}
}

// run runs a command to completion within timeout, and fails the test with
// its output if it fails.
func run(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s in %s:\n%s", name, strings.Join(args, " "), dir, out)
	return string(out)
}

var buildTypeScript = sync.OnceValue(func() error {
	cmd := exec.Command("npm", "run", "--silent", "build")
	cmd.Dir = filepath.Join(clientsDir(), "typescript")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm run build: %w\n%s", err, out)
	}
	return nil
})

func requireTypeScriptBuilt(t *testing.T) {
	t.Helper()
	requireRuntime(t, "node", "TypeScript")
	dir := filepath.Join(clientsDir(), "typescript")
	_, err := os.Stat(filepath.Join(dir, "node_modules"))
	require.NoError(t, err, "clients/typescript/node_modules is missing: run scripts/deps.sh node (make test does)")
	require.NoError(t, buildTypeScript())
}

// TestPythonClient runs the Python client's test suite against a live
// ledgerd.
func TestPythonClient(t *testing.T) {
	t.Parallel()
	requireRuntime(t, python, "Python")
	addr, _ := startLedgerd(t)
	dir := filepath.Join(clientsDir(), "python")
	env := append([]string{"LEDGERD_ADDR=" + addr, "PYTHONPATH=src:gen", "PYTHONDONTWRITEBYTECODE=1"}, startAuthLedgerd(t)...)
	out := run(t, 5*time.Minute, dir, env, python, "-m", "unittest", "discover", "-s", "tests", "-v")
	t.Log(lastLines(out, 3))
	require.Regexp(t, `(?m)^OK$`, out, "every test ran: none skipped")
}

// TestTypeScriptClient runs the TypeScript client's test suite against a
// live ledgerd.
func TestTypeScriptClient(t *testing.T) {
	t.Parallel()
	requireTypeScriptBuilt(t)
	addr, _ := startLedgerd(t)
	dir := filepath.Join(clientsDir(), "typescript")
	env := append([]string{"LEDGERD_ADDR=" + addr}, startAuthLedgerd(t)...)
	out := run(t, 5*time.Minute, dir, env, "npm", "test", "--silent")
	t.Log(lastLines(out, 8))
	require.Regexp(t, `(?m)^# fail 0$`, out)
	require.Regexp(t, `(?m)^# skipped 0$`, out, "every test ran: none skipped")
}

// contestAnswer is what each contest worker prints.
type contestAnswer struct {
	Owner        string `json:"owner"`
	Value        string `json:"value"`
	Replayed     bool   `json:"replayed"`
	FencingToken int64  `json:"fencing_token"`
}

// TestOneKeyContestedByThreeLanguages starts a Go, a Python and a
// TypeScript worker on the same key at once, several times, with the
// workers starting at different moments so that different workers win:
// exactly one does the work each time, and all three report its result.
func TestOneKeyContestedByThreeLanguages(t *testing.T) {
	t.Parallel()
	requireRuntime(t, python, "Python")
	requireTypeScriptBuilt(t)
	addr, b := startLedgerd(t)
	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	dir := clientsDir()

	// Each round delays the workers' starts differently, so that each
	// language gets rounds it is likely to win; every worker still arrives
	// while another may hold the key (the work takes 1.5s). Who wins does
	// not matter to the assertions, only that one did the work and all
	// report its result: the leases (5 min) outlast any stall, so no
	// worker's lease runs out and lets another run the work again.
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	rounds := []struct{ goDelay, pythonDelay, typescriptDelay time.Duration }{
		{0, 0, 0},
		{0, ms(300), ms(300)},
		{ms(1500), 0, ms(1500)},
		{ms(1500), ms(1500), 0},
		{ms(600), ms(300), 0},
	}
	for round, delays := range rounds {
		key := fmt.Sprintf("contested-%d", round)
		workLog := filepath.Join(t.TempDir(), "work.log")
		common := []string{"--addr", addr, "--namespace", "contest", "--key", key, "--work-log", workLog, "--work-ms", "1500", "--lease-ttl-ms", "300000"}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)

		var wg sync.WaitGroup
		answers := make(chan contestAnswer, 3)
		errs := make(chan error, 3)
		worker := func(delay time.Duration, name string, args ...string) {
			wg.Go(func() {
				time.Sleep(delay)
				cmd := exec.CommandContext(ctx, name, args...)
				cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(dir, "python", "src")+":"+filepath.Join(dir, "python", "gen"), "PYTHONDONTWRITEBYTECODE=1")
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					errs <- fmt.Errorf("%s: %w\n%s", name, err, stderr.String())
					return
				}
				var answer contestAnswer
				if err := json.Unmarshal(bytes.TrimSpace(out), &answer); err != nil {
					errs <- fmt.Errorf("%s printed %q: %w", name, out, err)
					return
				}
				answers <- answer
			})
		}
		worker(delays.pythonDelay, python, append([]string{filepath.Join(dir, "python", "examples", "contest_worker.py"), "--owner", "python"}, common...)...)
		worker(delays.typescriptDelay, "node", append([]string{filepath.Join(dir, "typescript", "dist", "examples", "contest-worker.js"), "--owner", "typescript"}, common...)...)
		wg.Go(func() {
			time.Sleep(delays.goDelay)
			result, err := client.Do(ctx, "contest", key, func(ctx context.Context) ([]byte, error) {
				if err := appendLine(workLog, "go"); err != nil {
					return nil, err
				}
				time.Sleep(1500 * time.Millisecond)
				return []byte("done by go"), nil
			}, ledgerclient.WithOwner("go"), ledgerclient.WithLeaseTTL(5*time.Minute))
			if err != nil {
				errs <- fmt.Errorf("go: %w", err)
				return
			}
			answers <- contestAnswer{Owner: "go", Value: string(result.Value), Replayed: result.Replayed, FencingToken: result.FencingToken}
		})
		wg.Wait()
		cancel()
		close(answers)
		close(errs)
		for err := range errs {
			require.NoError(t, err, "round %d", round)
		}

		lines := readLines(t, workLog)
		require.Len(t, lines, 1, "round %d: exactly one worker did the work: %v", round, lines)
		winner := lines[0]
		var fresh int
		for answer := range answers {
			require.Equal(t, "done by "+winner, answer.Value, "round %d: %s reports the winner's result", round, answer.Owner)
			require.Equal(t, int64(1), answer.FencingToken, "round %d", round)
			if !answer.Replayed {
				fresh++
				require.Equal(t, winner, answer.Owner)
			}
		}
		require.Equal(t, 1, fresh, "round %d: one fresh result, two replays", round)

		var state, owner string
		var result []byte
		require.NoError(t, b.Pool.QueryRow(context.Background(),
			`SELECT state, owner, result FROM entries WHERE namespace = 'contest' AND key = $1`, key).Scan(&state, &owner, &result))
		require.Equal(t, "completed", state)
		require.Equal(t, winner, owner)
		require.Equal(t, "done by "+winner, string(result))
		t.Logf("round %d (delays go %s, python %s, typescript %s): %s did the work",
			round, delays.goDelay, delays.pythonDelay, delays.typescriptDelay, winner)
	}
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err, "nobody did the work")
	defer f.Close()
	var lines []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		lines = append(lines, scanner.Text())
	}
	require.NoError(t, scanner.Err())
	return lines
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
