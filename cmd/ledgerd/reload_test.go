package main

import (
	"context"
	"maps"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// reloadingDaemon is a `ledgerd serve` whose reloads a test asks for, as
// SIGHUP does.
type reloadingDaemon struct {
	daemon
	reload func()
}

// startReloadingDaemon runs `ledgerd serve --config path` in development
// mode on ports of its own, and waits for it to serve.
func startReloadingDaemon(t *testing.T, path string) reloadingDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	requests := make(chan struct{}, 1)
	d := reloadingDaemon{
		daemon: daemon{stdout: &ledgertest.LogBuffer{}, stderr: &ledgertest.LogBuffer{}, signal: cancel},
		reload: func() { requests <- struct{}{} },
	}
	vars := map[string]string{
		"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_LISTEN_ADDR": "127.0.0.1:0", "LEDGER_HTTP_ADDR": "127.0.0.1:0",
		"LEDGER_LOG_FORMAT": "json", "LEDGER_INSECURE_DEV": "true",
	}
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = run(withReloads(ctx, requests), []string{"serve", "--config", path}, env(maps.Clone(vars)), d.stdout, d.stderr)
	}()
	d.done = done
	d.stop = func() error {
		cancel()
		<-done
		return runErr
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	serving := regexp.MustCompile(`"msg":"ledgerd serving".*"addr":"([^"]+)","http_addr":"([^"]+)"`)
	require.Eventually(t, func() bool {
		m := serving.FindStringSubmatch(d.stdout.String())
		if m != nil {
			d.grpcAddr, d.httpAddr = m[1], m[2]
		}
		return m != nil
	}, time.Minute, 20*time.Millisecond, "stdout: %s; stderr: %s", d.stdout, d.stderr)
	return d
}

// awaitLog waits until the daemon has logged pattern n times in all.
func (d reloadingDaemon) awaitLog(t *testing.T, pattern string, n int) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	require.Eventually(t, func() bool { return len(re.FindAllString(d.stdout.String(), -1)) >= n },
		time.Minute, 20*time.Millisecond, "%d× %s; stdout: %s", n, pattern, d.stdout)
}

// lookupStatus makes one Lookup over HTTP and returns its status code:
// 404 when admitted (the key does not exist), 429 when rate-limited.
func (d reloadingDaemon) lookupStatus(t *testing.T) int {
	t.Helper()
	res, err := http.Post("http://"+d.httpAddr+"/ledger.v1.LedgerService/Lookup", "application/json",
		strings.NewReader(`{"namespace":"ns","key":"k"}`))
	require.NoError(t, err)
	_ = res.Body.Close()
	return res.StatusCode
}

// TestReload: on a reload request (SIGHUP) the log level and the rate
// limits change without a restart, a change to another setting is logged
// as needing one and not applied, an invalid file changes nothing, and a
// change of the file's content reloads it without a signal.
func TestReload(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "log-level: info\nrate-limit-principal: 0.001\nrate-limit-principal-burst: 1\n")
	d := startReloadingDaemon(t, path)
	write := func(content string) { require.NoError(t, os.WriteFile(path, []byte(content), 0o600)) }
	finishedCalls := func() int { return strings.Count(d.stdout.String(), `"msg":"finished call"`) }

	require.Equal(t, http.StatusNotFound, d.lookupStatus(t), "the burst of 1")
	require.Equal(t, http.StatusTooManyRequests, d.lookupStatus(t), "0.001/s: the next is refused")

	// The log level and the rate limits apply; the key size needs a restart.
	write("log-level: warn\nrate-limit-principal: 1000\nrate-limit-principal-burst: 1000\nmax-key-bytes: 100\n")
	d.reload()
	d.awaitLog(t, `"msg":"configuration reloaded"[^\n]*"trigger":"SIGHUP","applied":\["log-level","rate-limit-principal","rate-limit-principal-burst"\],"restart_needed":\["max-key-bytes"\]`, 1)
	require.Regexp(t, `"msg":"configuration changed, but this setting needs a restart to apply","key":"max-key-bytes","running":"512","configured":"100","source":"file"`, d.stdout.String())
	require.Eventually(t, func() bool { return d.lookupStatus(t) == http.StatusNotFound }, time.Minute, 10*time.Millisecond,
		"the bucket refills at the new rate")
	quiet := finishedCalls()
	require.Equal(t, http.StatusNotFound, d.lookupStatus(t))
	require.Equal(t, quiet, finishedCalls(), "warn: a NOT_FOUND call (info) is no longer logged")

	// An invalid file changes nothing: the rate and the level stay.
	write("log-level: info\nrate-limit-principal: 0.001\nrate-limit-principal-burst: 1\nlisten-adr: x\n")
	d.reload()
	d.awaitLog(t, `"msg":"configuration not reloaded: the running one stays"[^\n]*unknown key \\"listen-adr\\"`, 1)
	for range 5 {
		require.Equal(t, http.StatusNotFound, d.lookupStatus(t), "still 1000/s, burst 1000")
	}
	require.Equal(t, quiet, finishedCalls(), "still warn")

	// A change of the file's content reloads it without a signal.
	write("log-level: info\nrate-limit-principal: 0.001\nrate-limit-principal-burst: 1\n")
	d.awaitLog(t, `"msg":"configuration reloaded"[^\n]*"trigger":"file changed"`, 1)
	require.Eventually(t, func() bool { return d.lookupStatus(t) == http.StatusTooManyRequests }, time.Minute, 10*time.Millisecond,
		"back to 0.001/s once the bucket's token is spent")
	require.Greater(t, finishedCalls(), quiet, "info again: calls are logged")
	require.NoError(t, d.stop())
}
