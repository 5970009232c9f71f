package main

import (
	"bytes"
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// TestMain runs the tests against a real PostgreSQL (see pgtest), which
// also fails the run if goroutines are left behind.
func TestMain(m *testing.M) { pgtest.Main(m) }

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the output of this run")

// testConfig lets the tests ask for 50ms leases, so that they expire fast.
var testConfig = ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 50 * time.Millisecond}}

// namespace is the namespace of the tests' keys; every test has a ledgerd
// and a schema of its own.
const namespace = "billing"

// startLedgerd serves a fresh ledger on a loopback TCP port, as a deployed
// ledgerd would, and returns its address.
func startLedgerd(t *testing.T) string {
	t.Helper()
	return startLedgerdWith(t, testConfig)
}

// startLedgerdWith is startLedgerd with the ledger configured by cfg.
func startLedgerdWith(t *testing.T, cfg ledger.Config) string {
	t.Helper()
	return ledgertest.ServeTCP(t, ledgertest.Store(t, cfg).Store, server.Config{})
}

// result is what one run of ledgerctl printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// ctl runs ledgerctl against the ledgerd at addr (through LEDGERCTL_ADDR,
// as ops would set it).
func ctl(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return ctlEnv(t, map[string]string{envAddr: addr}, args...)
}

// ctlEnv runs ledgerctl with the environment env.
func ctlEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, func(name string) string { return env[name] }, &stdout, &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// ok runs ledgerctl and requires it to succeed.
func ok(t *testing.T, addr string, args ...string) string {
	t.Helper()
	r := ctl(t, addr, args...)
	require.Equal(t, exitOK, r.code, "ledgerctl %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	return r.stdout
}

var (
	// timestamps matches the RFC 3339 times of tables and JSON.
	timestamps = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	// apiTokens matches API tokens, and tokenIDs their ids (16 hex digits).
	apiTokens = regexp.MustCompile(`ldg_[0-9a-f]{16}_[A-Za-z0-9_-]+`)
	tokenIDs  = regexp.MustCompile(`\b[0-9a-f]{16}\b`)
	// namespaceActivity matches GetNamespace's activity in JSON: the
	// answering replica's counts over a window that grows with its uptime,
	// and of the calls that parallel tests make.
	namespaceActivity = regexp.MustCompile(`"activity":\{[^{}]*\}`)
)

// normalise replaces what changes from run to run (times, API tokens and
// their ids, a namespace's recent activity) with placeholders. Table times
// and token ids have a fixed width, so columns stay aligned.
func normalise(s string) string {
	s = namespaceActivity.ReplaceAllString(s, `"activity":"<activity>"`)
	s = apiTokens.ReplaceAllString(s, "<token>")
	s = tokenIDs.ReplaceAllString(s, "<token-id>")
	return timestamps.ReplaceAllString(s, "<time>")
}

// golden compares got, normalised, with testdata/NAME.golden; with -update
// it rewrites the file instead.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = normalise(got)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file: run go test ./cmd/ledgerctl/ -update")
	require.Equal(t, string(want), got, "%s differs: compare, then rerun with -update if the change is intended", path)
}

// driver makes a known history through the Go client, as pipelines would.
type driver struct {
	t      *testing.T
	client *ledgerclient.Client
}

func newDriver(t *testing.T, addr string) *driver {
	t.Helper()
	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	return &driver{t: t, client: client}
}

// reserve acquires key for owner with a lease of ttl and returns its token.
func (d *driver) reserve(key, owner string, ttl time.Duration, fingerprint []byte, metadata map[string]string) int64 {
	d.t.Helper()
	response, err := d.client.Reserve(d.t.Context(), &ledgerv1.ReserveRequest{
		Namespace: namespace, Key: key, Owner: owner, LeaseTtl: durationpb.New(ttl),
		Fingerprint: fingerprint, Metadata: metadata,
	})
	require.NoError(d.t, err)
	require.NotNil(d.t, response.GetAcquired(), "reserve %s by %s: %v", key, owner, response)
	return response.GetAcquired().GetFencingToken()
}

func (d *driver) complete(key string, token int64, result string) error {
	_, err := d.client.Complete(d.t.Context(), &ledgerv1.CompleteRequest{
		Namespace: namespace, Key: key, FencingToken: token, Result: []byte(result),
	})
	return err
}

// shortLease expires quickly; the scenario waits it out.
const shortLease = 100 * time.Millisecond

// fingerprint is not printable: tables show it as base64.
var fingerprint = []byte{0x00, 0x9f, 0xff, 0x10}

// makeHistory drives the ledger into a known state:
//
//	k-done      reserved by w1, reclaimed by w2 after w1's lease ran out; w1's
//	            late Complete is refused (stale token); w2 completes it
//	k-failed    failed permanently by w5
//	k-held      leased by w3 for an hour
//	k-released  released by w6
//	k-stuck     leased by w4, whose lease ran out: stuck
func makeHistory(t *testing.T, addr string) {
	t.Helper()
	d := newDriver(t, addr)
	metadata := map[string]string{"run": "42", "stage": "load data"}
	staleToken := d.reserve("k-done", "w1", shortLease, fingerprint, metadata)
	d.reserve("k-stuck", "w4", shortLease, nil, nil)
	time.Sleep(2 * shortLease)

	token := d.reserve("k-done", "w2", time.Minute, fingerprint, nil)
	require.ErrorIs(t, d.complete("k-done", staleToken, "late"), ledgerclient.ErrLeaseLost)
	require.NoError(t, d.complete("k-done", token, `{"total": 3}`))

	token = d.reserve("k-failed", "w5", time.Minute, nil, nil)
	_, err := d.client.Fail(t.Context(), &ledgerv1.FailRequest{
		Namespace: namespace, Key: "k-failed", FencingToken: token,
		Error: &ledgerv1.WorkError{Code: "bad_input", Message: "row 7: not a number"},
	})
	require.NoError(t, err)

	d.reserve("k-held", "w3", time.Hour, nil, map[string]string{"host": "worker-3"})

	token = d.reserve("k-released", "w6", time.Minute, nil, nil)
	_, err = d.client.Release(t.Context(), &ledgerv1.ReleaseRequest{Namespace: namespace, Key: "k-released", FencingToken: token})
	require.NoError(t, err)
}

// TestReadCommands runs the commands that only read against one known
// history, in both output forms, and compares them with the golden files.
func TestReadCommands(t *testing.T) {
	t.Parallel()
	addr := startLedgerd(t)
	makeHistory(t, addr)

	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"get", []string{"get", namespace, "k-done"}},
		{"get-json", []string{"get", namespace, "k-done", "-o", "json"}},
		{"get-history", []string{"get", "--history", namespace, "k-done"}},
		{"get-history-json", []string{"-o", "json", "get", namespace, "k-done", "--history"}},
		{"get-failed", []string{"get", namespace, "k-failed"}},
		{"get-held", []string{"get", namespace, "k-held"}},
		{"history", []string{"history", namespace, "k-done"}},
		{"history-json", []string{"history", namespace, "k-done", "-o", "json"}},
		{"history-limit", []string{"history", namespace, "k-done", "--limit", "2"}},
		{"list", []string{"list", namespace}},
		{"list-json", []string{"list", namespace, "-o", "json"}},
		{"list-stuck", []string{"list", namespace, "--stuck"}},
		{"list-state", []string{"list", namespace, "--state", "completed,FAILED"}},
		{"list-owner", []string{"list", namespace, "--owner", "w3"}},
		{"list-prefix", []string{"list", namespace, "--prefix", "k-re"}},
		{"list-updated", []string{"list", namespace, "--updated-after", "1h", "--updated-before", "2999-01-01"}},
		{"list-updated-none", []string{"list", namespace, "--updated-before", "2000-01-01T00:00:00Z"}},
		{"list-limit", []string{"list", namespace, "--limit", "2"}},
		{"events", []string{"events", namespace}},
		{"events-table", []string{"events", namespace, "-o", "table"}},
		{"events-kind", []string{"events", namespace, "--kind", "reclaimed,refused-stale-token", "--since", "1h"}},
		{"events-until", []string{"events", namespace, "--until", "2000-01-01"}},
		{"namespaces-list", []string{"namespaces", "list"}},
		{"namespaces-list-json", []string{"namespaces", "list", "-o", "json"}},
		{"namespaces-show", []string{"namespaces", "show", namespace}},
		{"namespaces-show-json", []string{"namespaces", "show", namespace, "-o", "json"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			t.Parallel()
			r := ctl(t, addr, tc.args...)
			require.Equal(t, exitOK, r.code, "stderr: %s", r.stderr)
			golden(t, tc.golden, r.stdout)
			if strings.Contains(tc.golden, "limit") {
				require.Contains(t, r.stderr, "stopped at --limit 2")
			} else {
				require.Empty(t, r.stderr)
			}
		})
	}
}

// TestAdminActions runs the commands that change the ledger, each on a
// ledger of its own, and checks their output and their effect.
func TestAdminActions(t *testing.T) {
	t.Parallel()

	t.Run("release", func(t *testing.T) {
		t.Parallel()
		addr := startLedgerd(t)
		makeHistory(t, addr)
		golden(t, "release", ok(t, addr, "release", namespace, "k-held", "--reason", "worker-3 is gone"))
		// The lease is over: releasing again is refused, by lookup or by token.
		r := ctl(t, addr, "release", namespace, "k-held", "--reason", "again")
		require.Equal(t, exitRefused, r.code)
		require.Equal(t, "ledgerctl release: NOT_LEASED: billing/k-held is RELEASED: there is no lease to release\n", r.stderr)
		// The same grant again, by token, is a retry that succeeds.
		golden(t, "release-again-json", ok(t, addr, "release", namespace, "k-held", "--reason", "again", "--fencing-token", "1", "-o", "json"))
		golden(t, "release-history", ok(t, addr, "history", namespace, "k-held"))
	})

	t.Run("release of a stale token", func(t *testing.T) {
		t.Parallel()
		addr := startLedgerd(t)
		d := newDriver(t, addr)
		d.reserve("k", "w1", shortLease, nil, nil)
		time.Sleep(2 * shortLease)
		d.reserve("k", "w2", time.Hour, nil, nil)
		r := ctl(t, addr, "release", namespace, "k", "--fencing-token", "1", "--reason", "stale")
		require.Equal(t, exitRefused, r.code, r.stderr)
		require.Contains(t, r.stderr, "ledgerctl release: LEASE_LOST: ")
	})

	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		addr := startLedgerd(t)
		makeHistory(t, addr)
		golden(t, "reset", ok(t, addr, "reset", namespace, "k-done", "--reason", "bad deploy 2025-03-01"))
		golden(t, "reset-failed-json", ok(t, addr, "reset", namespace, "k-failed", "--reason", "input fixed", "-o", "json"))
		// The work runs again, with a higher token: the reset moved it on
		// from 2 to 3, so that no grant reuses the token of the one it undid.
		d := newDriver(t, addr)
		require.Equal(t, int64(4), d.reserve("k-done", "w9", time.Minute, fingerprint, nil))
		golden(t, "reset-events", ok(t, addr, "events", namespace, "--kind", "reset", "-o", "table"))
	})

	t.Run("purge", func(t *testing.T) {
		t.Parallel()
		addr := startLedgerd(t)
		ok(t, addr, "namespaces", "create", namespace, "--retention", "10ms", "--reason", "short-lived test data")
		d := newDriver(t, addr)
		require.NoError(t, d.complete("k-old", d.reserve("k-old", "w1", time.Minute, nil, nil), "done"))
		time.Sleep(50 * time.Millisecond)
		golden(t, "purge", ok(t, addr, "purge", namespace, "--reason", "make room"))
		golden(t, "purge-again-json", ok(t, addr, "purge", namespace, "--reason", "make room", "-o", "json"))
		golden(t, "get-purged", ok(t, addr, "get", namespace, "k-old"))
		golden(t, "get-purged-json", ok(t, addr, "get", namespace, "k-old", "-o", "json"))
	})

	t.Run("namespaces create and set", func(t *testing.T) {
		t.Parallel()
		addr := startLedgerd(t)
		golden(t, "namespaces-create", ok(t, addr, "namespaces", "create", "payments", "--reason", "new pipeline",
			"--default-lease-ttl", "45s", "--max-lease-ttl", "2h", "--max-result-bytes", "4096",
			"--retention", "30d", "--max-attempts", "5", "--event-retention", "90d", "--max-held-leases", "100"))
		golden(t, "namespaces-create-defaults-json", ok(t, addr, "namespaces", "create", "reports", "--reason", "new pipeline", "-o", "json"))
		// Only the settings given change.
		golden(t, "namespaces-set", ok(t, addr, "namespaces", "set", "payments", "--max-attempts", "0", "--retention", "36h", "--reason", "unlimited retries"))
		golden(t, "namespaces-set-json", ok(t, addr, "namespaces", "set", "payments", "--max-result-bytes", "0", "--reason", "no results", "-o", "json"))
		golden(t, "namespaces-set-quota", ok(t, addr, "namespaces", "set", "payments", "--max-stored-bytes", "1048576", "--reason", "cap results"))
		golden(t, "namespaces-show-quota", ok(t, addr, "namespaces", "show", "payments"))
		golden(t, "namespaces-events", ok(t, addr, "events", "payments", "--kind", "namespace_changed", "-o", "table"))
	})
}

// TestExitCodes checks the exit code and the message of each kind of
// failure.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	addr := startLedgerd(t)
	makeHistory(t, addr)

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // a part of it
	}{
		{"no command", nil, exitUsage, "Usage:"},
		{"unknown command", []string{"gte", namespace, "k"}, exitUsage, `ledgerctl: unknown command "gte"`},
		{"unknown subcommand", []string{"namespaces", "delete", "x"}, exitUsage, `unknown command "namespaces delete"`},
		{"group without subcommand", []string{"namespaces"}, exitUsage, "ledgerctl namespaces: missing subcommand"},
		{"unknown flag", []string{"get", namespace, "k", "--hist"}, exitUsage, "ledgerctl get: flag provided but not defined: -hist"},
		{"missing argument", []string{"get", namespace}, exitUsage, "ledgerctl get: missing arguments: want NS KEY"},
		{"extra argument", []string{"get", namespace, "k", "x"}, exitUsage, `unexpected arguments ["x"]`},
		{"argument to a command without any", []string{"namespaces", "list", "x"}, exitUsage, `unexpected arguments ["x"]: it takes none`},
		{"bad output", []string{"get", namespace, "k-done", "-o", "yaml"}, exitUsage, `-o "yaml": want table or json`},
		{"bad state", []string{"list", namespace, "--state", "done"}, exitUsage, `--state: unknown state "DONE"; want leased,completed,failed,released,purged`},
		{"bad kind", []string{"events", namespace, "--kind", "born"}, exitUsage, `--kind: unknown kind "BORN"`},
		{"bad time", []string{"list", namespace, "--updated-after", "yesterday"}, exitUsage, "want RFC 3339"},
		{"negative limit", []string{"list", namespace, "--limit", "-1"}, exitUsage, "--limit must not be negative"},
		{"no reason", []string{"reset", namespace, "k-done"}, exitUsage, "ledgerctl reset: --reason is required"},
		{"nothing to set", []string{"namespaces", "set", namespace, "--reason", "r"}, exitUsage, "nothing to change"},
		{"negative quota", []string{"namespaces", "set", namespace, "--max-held-leases", "-1", "--reason", "r"}, exitUsage, "--max-held-leases must be 0 (no quota) or more, got -1"},
		{"bad duration", []string{"namespaces", "set", namespace, "--retention", "1y", "--reason", "r"}, exitUsage, "want a duration like 90s, 1h30m or 7d"},
		{"unknown key", []string{"get", namespace, "nope"}, exitNotFound, "ledgerctl get: NOT_FOUND: "},
		{"unknown key's history", []string{"history", namespace, "nope"}, exitOK, ""},
		{"reset of an unknown key", []string{"reset", namespace, "nope", "--reason", "r"}, exitNotFound, "ledgerctl reset: NOT_FOUND: "},
		{"release of an unknown key", []string{"release", namespace, "nope", "--reason", "r"}, exitNotFound, "ledgerctl release: NOT_FOUND: "},
		{"unknown namespace", []string{"namespaces", "show", "nope"}, exitNotFound, "ledgerctl namespaces show: NOT_FOUND: "},
		{"set of an unknown namespace", []string{"namespaces", "set", "nope", "--max-attempts", "3", "--reason", "r"}, exitNotFound, "NOT_FOUND: "},
		{"release of a completed key", []string{"release", namespace, "k-done", "--reason", "r"}, exitRefused, "ledgerctl release: NOT_LEASED: billing/k-done is COMPLETED"},
		{"release of a completed key by token", []string{"release", namespace, "k-done", "--fencing-token", "2", "--reason", "r"}, exitRefused, "ledgerctl release: NOT_LEASED: "},
		{"release of another token", []string{"release", namespace, "k-held", "--fencing-token", "7", "--reason", "r"}, exitRefused, "ledgerctl release: LEASE_LOST: "},
		{"create of an existing namespace", []string{"namespaces", "create", namespace, "--reason", "r"}, exitRefused, "ledgerctl namespaces create: ALREADY_EXISTS: "},
		{"invalid namespace", []string{"get", "bad namespace!", "k"}, exitInvalid, "ledgerctl get: INVALID_ARGUMENT: "},
		{"invalid key", []string{"list", namespace, "--prefix", strings.Repeat("k", 600)}, exitInvalid, "INVALID_ARGUMENT: "},
		{"setting out of bounds", []string{"namespaces", "set", namespace, "--default-lease-ttl", "1ms", "--reason", "r"}, exitInvalid, "ledgerctl namespaces set: INVALID_ARGUMENT: "},
		{"reason too long", []string{"purge", namespace, "--reason", strings.Repeat("r", 1025)}, exitInvalid, "INVALID_ARGUMENT: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ctl(t, addr, tc.args...)
			require.Equal(t, tc.code, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			require.Contains(t, r.stderr, tc.stderr)
			if tc.code != exitOK {
				require.Empty(t, r.stdout)
			}
		})
	}

	t.Run("unavailable", func(t *testing.T) {
		t.Parallel()
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		closed := lis.Addr().String()
		require.NoError(t, lis.Close())
		started := time.Now()
		r := ctl(t, closed, "get", namespace, "k", "--timeout", "300ms")
		require.Equal(t, exitUnavailable, r.code, r.stderr)
		require.Contains(t, r.stderr, "ledgerctl get: DEADLINE_EXCEEDED: no answer within --timeout 300ms; last error: UNAVAILABLE: ")
		require.Less(t, time.Since(started), 5*time.Second)
	})
}

// TestHelp checks that every command answers --help (and help COMMAND) on
// stdout with exit code 0, without connecting, and keeps the help in golden
// files so that a change to it shows in review.
func TestHelp(t *testing.T) {
	t.Parallel()
	const nowhere = "192.0.2.1:1" // TEST-NET-1: --help must not connect
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := ctl(t, nowhere, args...)
		require.Equal(t, exitOK, r.code)
		golden(t, "help", r.stdout)
	}
	for _, cmd := range commands() {
		name := strings.ReplaceAll(cmd.name, " ", "-")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			words := strings.Fields(cmd.name)
			r := ctl(t, nowhere, append(words, "--help")...)
			require.Equal(t, exitOK, r.code, r.stderr)
			require.Empty(t, r.stderr)
			require.True(t, strings.HasPrefix(r.stdout, "Usage: ledgerctl "+cmd.name), r.stdout)
			golden(t, "help-"+name, r.stdout)

			viaHelp := ctl(t, nowhere, append([]string{"help"}, words...)...)
			require.Equal(t, exitOK, viaHelp.code)
			require.Equal(t, r.stdout, viaHelp.stdout)

			if cmd.subcommands == "" {
				// -h works after arguments too.
				r = ctl(t, nowhere, append(words, "some", "args", "-h")...)
				require.Equal(t, exitOK, r.code)
			}
		})
	}
	r := ctl(t, nowhere, "help", "nope")
	require.Equal(t, exitUsage, r.code)
}

// TestEventsSettling: the events of the settling delay are left out, and
// ledgerctl says so on stderr; --unsettled lists them.
func TestEventsSettling(t *testing.T) {
	t.Parallel()
	cfg := testConfig
	cfg.EventSettlingDelay = time.Hour // every event of this test is still settling
	addr := startLedgerdWith(t, cfg)
	d := newDriver(t, addr)
	d.reserve("k", "w", time.Minute, nil, nil)

	settled := ctl(t, addr, "events", namespace)
	require.Equal(t, exitOK, settled.code, settled.stderr)
	require.Empty(t, settled.stdout)
	require.Regexp(t, `^ledgerctl: events from \S+ on are still settling and were left out; --unsettled lists them\n$`, settled.stderr)

	all := ctl(t, addr, "events", namespace, "--unsettled", "-o", "table")
	require.Equal(t, exitOK, all.code, all.stderr)
	require.Empty(t, all.stderr)
	require.Contains(t, all.stdout, "NAMESPACE_CREATED")
	require.Contains(t, all.stdout, "RESERVED")
}
