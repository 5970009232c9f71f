package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// scriptTimeout bounds one run of scripts/pg.sh (initdb included).
const scriptTimeout = 2 * time.Minute

// postgres is the harness's own PostgreSQL cluster, run by scripts/pg.sh.
// The harness signals only the processes of this cluster: the postmaster
// named in its postmaster.pid and that postmaster's children.
type postgres struct {
	script   string    // scripts/pg.sh
	dir      string    // DATADIR given to pg.sh (it may relocate the cluster when root)
	port     int       // 127.0.0.1 port
	url      string    // connection URL printed by pg.sh start
	dataDir  string    // the cluster's real data directory (SHOW data_directory)
	fsync    bool      // the cluster keeps fsync on
	watchdog *exec.Cmd // destroys the cluster if the harness dies first
}

// startPostgres creates and starts a cluster in dir on a free port. Without
// fsync, the cluster is created as a throwaway one (fsync off), but
// synchronous_commit is turned back on: the harness kills processes, not
// the machine, so every acknowledged commit must still survive a crash of
// PostgreSQL.
//
// If the harness dies without cleaning up, a watchdog destroys the cluster
// and removes orphanDir (unless it is empty): the harness's own directory.
func startPostgres(ctx context.Context, script, dir string, fsync bool, orphanDir string) (*postgres, error) {
	p := &postgres{script: script, dir: dir, fsync: fsync}
	p.startWatchdog(orphanDir)
	var errs []error
	for range 3 {
		port, err := freePort()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.port = port
		if err = p.start(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := p.prepare(ctx); err != nil {
			return p, err
		}
		return p, nil
	}
	return p, errors.Join(errs...)
}

// start runs pg.sh start, which is idempotent and recovers a crashed
// cluster.
func (p *postgres) start(ctx context.Context) error {
	out, err := p.run(ctx, "start", p.dir, strconv.Itoa(p.port))
	if err != nil {
		return err
	}
	if !strings.HasPrefix(out, "postgres://") {
		return fmt.Errorf("pg.sh start printed %q, want a postgres:// URL", out)
	}
	p.url = out
	return nil
}

// prepare turns synchronous_commit on and finds the data directory.
func (p *postgres) prepare(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.url)
	if err != nil {
		return fmt.Errorf("connect to the chaos cluster: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if !p.fsync {
		for _, stmt := range []string{"ALTER SYSTEM SET synchronous_commit = on", "SELECT pg_reload_conf()"} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", stmt, err)
			}
		}
	}
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&p.dataDir); err != nil {
		return fmt.Errorf("find the data directory: %w", err)
	}
	return nil
}

// run runs scripts/pg.sh with args and returns its trimmed stdout.
func (p *postgres) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{p.script}, args...)...)
	cmd.Env = os.Environ()
	if !p.fsync {
		cmd.Env = append(cmd.Env, "LEDGER_PG_THROWAWAY=1")
	}
	cmd.Dir = "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", p.script, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// postmaster returns the PID in the cluster's postmaster.pid, after
// checking that it is a postgres process.
func (p *postgres) postmaster() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("postmaster.pid holds no PID: %q", first)
	}
	if comm := processName(pid); comm != "postgres" && comm != "postmaster" {
		return 0, fmt.Errorf("PID %d of postmaster.pid is %q, not postgres", pid, comm)
	}
	return pid, nil
}

// processes returns the postmaster and its children (the backends and the
// auxiliary processes).
func (p *postgres) processes() ([]int, error) {
	pm, err := p.postmaster()
	if err != nil {
		return nil, err
	}
	return append([]int{pm}, childrenOf(pm)...), nil
}

// restart stops the cluster as `pg_ctl stop -m fast|immediate` would (the
// postmaster's SIGINT or SIGQUIT) and starts it again with pg.sh.
func (p *postgres) restart(ctx context.Context, mode string) error {
	sig := syscall.SIGINT
	if mode == "immediate" {
		sig = syscall.SIGQUIT
	}
	pm, err := p.postmaster()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pm, sig); err != nil {
		return fmt.Errorf("signal the postmaster: %w", err)
	}
	if !waitGone(ctx, pm, 30*time.Second) {
		return fmt.Errorf("the postmaster (PID %d) did not stop within 30s of %s", pm, sig)
	}
	return p.start(ctx)
}

// pause stops every process of the cluster (SIGSTOP) and returns a
// function that resumes them.
func (p *postgres) pause() (func() error, error) {
	pids, err := p.processes()
	if err != nil {
		return nil, err
	}
	// Children first, so that the postmaster does not see them vanish.
	for i := len(pids) - 1; i >= 0; i-- {
		_ = syscall.Kill(pids[i], syscall.SIGSTOP) // a backend may have just exited
	}
	return func() error {
		var errs []error
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}, nil
}

// destroy stops the cluster and deletes it.
func (p *postgres) destroy() error {
	if p.watchdog != nil {
		_ = p.watchdog.Process.Kill()
		_ = p.watchdog.Wait()
		p.watchdog = nil
	}
	_, err := p.run(context.Background(), "destroy", p.dir)
	return err
}

// startWatchdog starts a detached shell that destroys the cluster once the
// harness's process is gone, in case it dies without cleaning up (like
// internal/pgtest's).
func (p *postgres) startWatchdog(orphanDir string) {
	const prog = `trap '' INT TERM HUP
while kill -0 "$1" 2>/dev/null; do sleep 1; done
bash "$2" destroy "$3" >/dev/null 2>&1
if [ -n "$4" ]; then rm -rf "$4"; fi`
	cmd := exec.Command("sh", "-c", prog, "ledgerchaos-watchdog", strconv.Itoa(os.Getpid()), p.script, p.dir, orphanDir)
	cmd.Dir = "/"
	if err := cmd.Start(); err == nil {
		p.watchdog = cmd
	}
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// processName returns /proc/PID/comm, or "" if the process is gone.
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var children []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if fields := statFields(child); len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			children = append(children, child)
		}
	}
	return children
}

// waitGone waits until pid no longer exists (or is a zombie), at most for
// limit.
func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || processState(pid) == "Z" {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// processState returns the state letter of /proc/PID/stat ("R", "S",
// "T", "Z"), or "" if the process is gone.
func processState(pid int) string {
	if fields := statFields(pid); len(fields) > 0 {
		return fields[0]
	}
	return ""
}

// statFields returns the fields of /proc/PID/stat after the command name
// (state, parent PID, ...), or nil if the process is gone.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	// "pid (comm) state ppid ...": comm may hold spaces, so cut at the last ')'.
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}
