package devcluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// orphanEnv makes the test binary a process that starts a cluster, prints
// what TestWatchdogDestroysOrphan needs to know of it, and waits to be
// killed.
const orphanEnv = "DEVCLUSTER_TEST_ORPHAN"

// Bounds on waiting for processes and clusters: generous, for a loaded
// machine.
const (
	startTimeout = 5 * time.Minute
	goneTimeout  = 2 * time.Minute
)

func TestMain(m *testing.M) {
	if os.Getenv(orphanEnv) != "" {
		os.Exit(runOrphan())
	}
	goleak.VerifyTestMain(m)
}

// orphan is what the orphan process tells its test about its cluster.
type orphan struct {
	Postmaster int    `json:"postmaster"`
	DataDir    string `json:"data_dir"`
}

// runOrphan starts a throwaway cluster, prints an orphan line and blocks
// until it is killed (or its stdin closes).
func runOrphan() int {
	pg, err := devcluster.StartPostgres(context.Background(), devcluster.PostgresConfig{Durability: devcluster.Throwaway})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pm, err := pg.Postmaster()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = json.NewEncoder(os.Stdout).Encode(orphan{Postmaster: pm, DataDir: pg.DataDir()})
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// startPostgres starts a cluster that is destroyed when the test ends.
func startPostgres(t *testing.T, cfg devcluster.PostgresConfig) *devcluster.Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	pg, err := devcluster.StartPostgres(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pg.Destroy()) }) // a second Destroy finds nothing to do
	return pg
}

// query runs sql on a connection of its own and scans its one row into dest.
func query(ctx context.Context, url, sql string, dest ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// requireAnswers checks that the cluster at url answers a query.
func requireAnswers(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var one int
	require.NoError(t, query(ctx, url, "SELECT 1", &one))
	require.Equal(t, 1, one)
}

// requireGone waits until the process pid has exited: it is gone, or a
// zombie that its parent has yet to reap.
func requireGone(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, err := devcluster.ReadProcessStat(pid)
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || (err == nil && st.State == "Z")
	}, goneTimeout, 20*time.Millisecond, "process %d still runs", pid)
}

// requireNoPath checks that path does not exist.
func requireNoPath(t *testing.T, path string) {
	t.Helper()
	_, err := os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "%s still exists", path)
}

func TestModuleRoot(t *testing.T) {
	root, err := devcluster.ModuleRoot()
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "scripts", "pg.sh"))
	require.DirExists(t, filepath.Join(root, "cmd", "ledgerd"))
}

// TestPostgresDurability starts a cluster of each durability and checks
// that it answers with the settings it promises, and that Destroy leaves
// neither a process nor a file behind.
func TestPostgresDurability(t *testing.T) {
	for _, tc := range []struct {
		durability               devcluster.Durability
		fsync, synchronousCommit string
	}{
		{devcluster.Throwaway, "off", "off"},
		{devcluster.CrashSafe, "off", "on"},
		{devcluster.Durable, "on", "on"},
	} {
		t.Run(tc.durability.String(), func(t *testing.T) {
			pg := startPostgres(t, devcluster.PostgresConfig{Durability: tc.durability})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var fsync, synchronousCommit, database string
			var port int
			require.NoError(t, query(ctx, pg.URL(), `SELECT current_setting('fsync'), current_setting('synchronous_commit'),
				current_database(), current_setting('port')::int`, &fsync, &synchronousCommit, &database, &port))
			require.Equal(t, tc.fsync, fsync)
			require.Equal(t, tc.synchronousCommit, synchronousCommit)
			require.Equal(t, "ledger", database)
			require.Equal(t, pg.Port(), port)
			require.FileExists(t, filepath.Join(pg.DataDir(), "PG_VERSION"))

			pm, err := pg.Postmaster()
			require.NoError(t, err)
			require.NoError(t, pg.Destroy())
			requireGone(t, pm)
			requireNoPath(t, pg.DataDir())
			requireNoPath(t, filepath.Dir(pg.DataDir())) // the temporary directory around it
		})
	}
}

// TestPostgresStopKeepsData stops a cluster in a directory of the test's,
// starts it again there and finds what was committed before.
func TestPostgresStopKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pg")
	cfg := devcluster.PostgresConfig{Dir: dir, Durability: devcluster.Throwaway, Keep: true}
	pg := startPostgres(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the stop')")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	pm, err := pg.Postmaster()
	require.NoError(t, err)
	require.NoError(t, pg.Stop(ctx))
	requireGone(t, pm)
	require.FileExists(t, filepath.Join(pg.DataDir(), "PG_VERSION"))

	again := startPostgres(t, cfg)
	require.Equal(t, pg.DataDir(), again.DataDir())
	var v string
	require.NoError(t, query(ctx, again.URL(), "SELECT v FROM kept", &v))
	require.Equal(t, "before the stop", v)
}

// TestPostgresProcesses finds the cluster's processes, measures their CPU
// time, pauses the cluster and restarts it in both modes.
func TestPostgresProcesses(t *testing.T) {
	pg := startPostgres(t, devcluster.PostgresConfig{Durability: devcluster.CrashSafe})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("processes", func(t *testing.T) {
		pm, err := pg.Postmaster()
		require.NoError(t, err)
		pids, err := pg.Processes()
		require.NoError(t, err)
		require.Equal(t, pm, pids[0])
		require.Greater(t, len(pids), 1, "the postmaster has auxiliary processes")
		read := 0
		for _, pid := range pids[1:] {
			st, err := devcluster.ReadProcessStat(pid)
			if errors.Is(err, os.ErrNotExist) {
				continue // a backend that exited since it was listed
			}
			require.NoError(t, err)
			require.Equal(t, pm, st.ParentPID)
			read++
		}
		require.Positive(t, read, "the long-lived auxiliary processes (checkpointer, writer...) are read")
	})

	t.Run("cpu", func(t *testing.T) {
		pm, err := pg.Postmaster()
		require.NoError(t, err)
		before := devcluster.CPUSecondsWithChildren(pm)
		var n int64
		require.NoError(t, query(ctx, pg.URL(), "SELECT count(*) FROM generate_series(1, 3000000)", &n))
		// The backend exits after the query; until the postmaster reaps it,
		// a reading can miss it (listed as a child, gone when read), so wait
		// for the count rather than read it once.
		require.Eventually(t, func() bool { return devcluster.CPUSecondsWithChildren(pm) > before },
			time.Minute, 10*time.Millisecond, "the backend's work counts, also once it has exited")
	})

	t.Run("pause", func(t *testing.T) {
		resume, err := pg.Pause()
		require.NoError(t, err)
		stopped := func() bool {
			pm, err := pg.Postmaster()
			if err != nil {
				return false
			}
			st, err := devcluster.ReadProcessStat(pm)
			return err == nil && st.State == "T"
		}
		require.Eventually(t, stopped, time.Minute, 10*time.Millisecond)
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		var one int
		require.Error(t, query(short, pg.URL(), "SELECT 1", &one), "a paused cluster answers nothing")
		cancelShort()
		require.NoError(t, resume())
		requireAnswers(t, pg.URL())
	})

	for _, mode := range []string{"fast", "immediate"} {
		t.Run("restart "+mode, func(t *testing.T) {
			conn, err := pgx.Connect(ctx, pg.URL())
			require.NoError(t, err)
			_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS acked (mode text)")
			require.NoError(t, err)
			_, err = conn.Exec(ctx, "INSERT INTO acked VALUES ($1)", mode)
			require.NoError(t, err)
			require.NoError(t, conn.Close(ctx))
			before, err := pg.Postmaster()
			require.NoError(t, err)

			require.NoError(t, pg.Restart(ctx, mode))
			requireGone(t, before)
			after, err := pg.Postmaster()
			require.NoError(t, err)
			require.NotEqual(t, before, after)
			var n int
			require.NoError(t, query(ctx, pg.URL(), "SELECT count(*) FROM acked WHERE mode = '"+mode+"'", &n))
			require.Equal(t, 1, n, "an acknowledged commit survives the restart")
		})
	}
	require.ErrorContains(t, pg.Restart(ctx, "smart"), `mode "smart"`)
}

// TestWatchdogDestroysOrphan kills a process that started a throwaway
// cluster: its watchdog must stop the cluster and delete it.
func TestWatchdogDestroysOrphan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	defer func() { _ = stdin.Close() }()
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	var o orphan
	err = json.NewDecoder(stdout).Decode(&o)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	require.NoError(t, err, "the orphan process's line")
	require.FileExists(t, filepath.Join(o.DataDir, "PG_VERSION"))
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait() // killed: its exit status says so

	requireGone(t, o.Postmaster)
	require.Eventually(t, func() bool {
		_, err := os.Stat(o.DataDir)
		return errors.Is(err, os.ErrNotExist)
	}, goneTimeout, 50*time.Millisecond, "the watchdog did not remove %s", o.DataDir)
	t.Log("the watchdog stopped PostgreSQL (PID " + strconv.Itoa(o.Postmaster) + ") and removed " + o.DataDir)
}
