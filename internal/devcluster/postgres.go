package devcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// scriptTimeout bounds one run of scripts/pg.sh. It is generous because,
	// as root on a machine without PostgreSQL, the script installs the Debian
	// package first.
	scriptTimeout = 10 * time.Minute

	// connectTimeout bounds the statements StartPostgres runs once the
	// cluster is up.
	connectTimeout = 30 * time.Second

	// postmasterStopTimeout bounds how long Restart waits for the postmaster
	// to exit.
	postmasterStopTimeout = time.Minute
)

// Durability is what an acknowledged commit of a cluster survives.
type Durability int

const (
	// Durable keeps fsync and synchronous_commit on, PostgreSQL's defaults:
	// a commit survives a crash of the machine. For benchmarks, whose write
	// figures would be fake otherwise, and for development.
	Durable Durability = iota
	// CrashSafe turns fsync off but keeps synchronous_commit on: a commit
	// survives a crash of PostgreSQL's processes, not of the machine. For
	// the chaos harness, which kills processes and needs every acknowledged
	// commit to outlive them.
	CrashSafe
	// Throwaway turns fsync, synchronous_commit and full_page_writes off,
	// and initdb skips its syncs: the fastest cluster, for tests, and one
	// that a crash may corrupt, so it is deleted afterwards.
	Throwaway
)

// String names d as the package's documentation does: "durable",
// "crash-safe" or "throwaway".
func (d Durability) String() string {
	switch d {
	case Durable:
		return "durable"
	case CrashSafe:
		return "crash-safe"
	case Throwaway:
		return "throwaway"
	}
	return "Durability(" + strconv.Itoa(int(d)) + ")"
}

// PostgresConfig configures StartPostgres. Zero fields take their defaults.
type PostgresConfig struct {
	// Dir is the data directory given to scripts/pg.sh, which creates the
	// cluster there on its first start and reuses it afterwards. As root,
	// pg.sh may put it under /var/tmp instead (see Postgres.DataDir).
	// Defaults to a new temporary directory, which Destroy removes.
	Dir string
	// Durability is what a commit survives. Defaults to Durable. fsync is
	// chosen when the cluster is created: a cluster reused from Dir keeps
	// its own.
	Durability Durability
	// Keep says that the cluster's data outlives this process: if the
	// process dies before Destroy, the watchdog only stops the cluster.
	// Without Keep, the watchdog destroys the cluster and removes OrphanDir
	// and the temporary directory of an empty Dir. Defaults to false.
	Keep bool
	// OrphanDir is a directory that the watchdog also removes when it
	// destroys the cluster, such as the caller's own temporary directory
	// around Dir. Defaults to none.
	OrphanDir string
	// Log receives scripts/pg.sh's progress messages (its stderr) as they
	// come. They are in the errors either way. Defaults to none.
	Log io.Writer
}

// Postgres is a private PostgreSQL cluster run by scripts/pg.sh, listening on
// 127.0.0.1 only. It belongs to the postgres system user when this process
// runs as root.
type Postgres struct {
	script     string // scripts/pg.sh
	dir        string // the DATADIR given to pg.sh
	temp       string // the temporary directory around dir, if StartPostgres made it
	durability Durability
	keep       bool
	log        io.Writer
	port       int
	url        string
	dataDir    string // where the cluster really is (SHOW data_directory)
	watchdog   *watchdog
}

// StartPostgres creates a cluster in cfg.Dir, or starts the one there, on a
// free port of 127.0.0.1 (on a new one, up to 3 times, if another process
// takes it first), creates the database "ledger" if it is missing, and checks
// that the cluster answers a query. It fails when scripts/pg.sh is not found
// (see ModuleRoot), when PostgreSQL's binaries are missing and cannot be
// installed, or when the cluster does not start; the script's messages are in
// the error, and what was started is cleaned up as the watchdog would.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	dir := cfg.Dir
	if dir != "" {
		// pg.sh runs from / (see run): a relative Dir is the caller's.
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, fmt.Errorf("start PostgreSQL: %w", err)
		}
	}
	p := &Postgres{
		script:     filepath.Join(root, "scripts", "pg.sh"),
		dir:        dir,
		durability: cfg.Durability,
		keep:       cfg.Keep,
		log:        cfg.Log,
	}
	if p.dir == "" {
		if err := p.makeTempDir(); err != nil {
			return nil, err
		}
	}
	action, remove := "destroy", nonEmpty(p.temp, cfg.OrphanDir)
	if cfg.Keep {
		action, remove = "stop", nil
	}
	if p.watchdog, err = startWatchdog(p.script, action, p.dir, remove); err != nil {
		warnings := p.log
		if warnings == nil {
			warnings = os.Stderr
		}
		fmt.Fprintf(warnings, "devcluster: warning: %v; if this process dies without stopping PostgreSQL, it keeps running in %s\n", err, p.dir)
	}
	err = p.startOnFreePort(ctx)
	if err == nil {
		err = p.prepare(ctx)
	}
	if err != nil {
		err = fmt.Errorf("start PostgreSQL in %s: %w", p.dir, err)
		if cfg.Keep {
			return nil, errors.Join(err, p.Stop(context.WithoutCancel(ctx)))
		}
		return nil, errors.Join(err, p.Destroy())
	}
	return p, nil
}

// makeTempDir makes the temporary directory of a cluster without Dir.
func (p *Postgres) makeTempDir() error {
	// A short path: the unix socket lives in the data directory, and socket
	// paths are limited to about 107 bytes (pg.sh copes with longer ones, but
	// /tmp/lpg123456789/pg needs no special casing).
	temp, err := os.MkdirTemp("", "lpg")
	if err != nil {
		return fmt.Errorf("make a directory for PostgreSQL: %w", err)
	}
	// As root, the cluster belongs to the postgres user, which must be able
	// to traverse this directory (MkdirTemp makes it 0700).
	if err := os.Chmod(temp, 0o755); err != nil {
		_ = os.RemoveAll(temp)
		return fmt.Errorf("make a directory for PostgreSQL: %w", err)
	}
	p.temp, p.dir = temp, filepath.Join(temp, "pg")
	return nil
}

// startOnFreePort runs pg.sh start on a free port, and on another one if
// the port was taken between the probe and the bind.
func (p *Postgres) startOnFreePort(ctx context.Context) error {
	var errs []error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		p.port = port
		err = p.start(ctx)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		// pg.sh's words when the server could not bind the port.
		if !strings.Contains(err.Error(), "is taken by another process") {
			break
		}
	}
	return errors.Join(errs...)
}

// start runs pg.sh start on p.port. It is idempotent, and recovers a
// cluster that crashed.
func (p *Postgres) start(ctx context.Context) error {
	out, err := p.run(ctx, "start", p.dir, strconv.Itoa(p.port))
	if err != nil {
		return err
	}
	if !strings.HasPrefix(out, "postgres://") {
		return fmt.Errorf("%s start printed %q, want a postgres:// URL", p.script, out)
	}
	p.url = out
	return nil
}

// prepare checks that the cluster answers, turns synchronous_commit back on
// for CrashSafe (pg.sh creates a cluster without fsync with it off), and
// finds the data directory.
func (p *Postgres) prepare(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.url)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", p.url, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if p.durability == CrashSafe {
		for _, stmt := range []string{"ALTER SYSTEM SET synchronous_commit = on", "SELECT pg_reload_conf()"} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("turn synchronous_commit on: %s: %w", stmt, err)
			}
		}
	}
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&p.dataDir); err != nil {
		return fmt.Errorf("find the data directory: %w", err)
	}
	return nil
}

// run runs scripts/pg.sh with args and returns its trimmed stdout. Its
// stderr goes to p.log and, when it fails, into the error.
func (p *Postgres) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{p.script}, args...)...)
	throwaway := "0"
	if p.durability != Durable {
		throwaway = "1" // initdb --no-sync and fsync off; see scripts/pg.sh
	}
	cmd.Env = append(os.Environ(), "LEDGER_PG_THROWAWAY="+throwaway)
	// Server-side commands run as the postgres user when root; it must be
	// able to read the working directory.
	cmd.Dir = "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if p.log != nil {
		cmd.Stderr = io.MultiWriter(&stderr, p.log)
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", p.script, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// URL returns the connection URL of the database "ledger", as the superuser
// postgres over TCP (the cluster trusts local connections).
func (p *Postgres) URL() string { return p.url }

// Port returns the port the cluster listens on, on 127.0.0.1.
func (p *Postgres) Port() int { return p.port }

// DataDir returns the cluster's data directory: PostgresConfig.Dir, or where
// pg.sh put the cluster instead when the postgres user cannot reach it.
func (p *Postgres) DataDir() string { return p.dataDir }

// Postmaster returns the PID in the cluster's postmaster.pid, after checking
// that it is a postgres process: a PID left by a crash may be another
// process's now. It fails when the cluster is not running.
func (p *Postgres) Postmaster() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("find the postmaster: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("find the postmaster: postmaster.pid holds no PID: %q", first)
	}
	if name := processName(pid); name != "postgres" && name != "postmaster" {
		return 0, fmt.Errorf("find the postmaster: PID %d of postmaster.pid is %q, not postgres", pid, name)
	}
	return pid, nil
}

// Processes returns the postmaster and its children: the backends and the
// auxiliary processes (checkpointer, WAL writer, ...). It fails as
// Postmaster does.
func (p *Postgres) Processes() ([]int, error) {
	pm, err := p.Postmaster()
	if err != nil {
		return nil, err
	}
	return append([]int{pm}, ChildrenOf(pm)...), nil
}

// Restart stops the cluster as `pg_ctl stop -m fast` or `-m immediate`
// would (mode "fast" sends the postmaster SIGINT: sessions are ended and
// the server shuts down cleanly; "immediate" sends SIGQUIT: the server
// stops at once and recovers from the WAL at the next start), waits up to a
// minute for the postmaster to exit, and starts the cluster again on the
// same port.
func (p *Postgres) Restart(ctx context.Context, mode string) error {
	sig := map[string]syscall.Signal{"fast": syscall.SIGINT, "immediate": syscall.SIGQUIT}[mode]
	if sig == 0 {
		return fmt.Errorf("restart PostgreSQL: mode %q, want fast or immediate", mode)
	}
	pm, err := p.Postmaster()
	if err != nil {
		return fmt.Errorf("restart PostgreSQL: %w", err)
	}
	if err := syscall.Kill(pm, sig); err != nil {
		return fmt.Errorf("restart PostgreSQL: signal the postmaster: %w", err)
	}
	if !waitGone(ctx, pm, postmasterStopTimeout) {
		return fmt.Errorf("restart PostgreSQL: the postmaster (PID %d) did not stop within %s of %s", pm, postmasterStopTimeout, sig)
	}
	if err := p.start(ctx); err != nil {
		return fmt.Errorf("restart PostgreSQL: %w", err)
	}
	return nil
}

// Start starts the cluster again after Stop (or a crash), on the port it
// had, so that its URL still leads to it.
func (p *Postgres) Start(ctx context.Context) error {
	if err := p.start(ctx); err != nil {
		return fmt.Errorf("start PostgreSQL again: %w", err)
	}
	return nil
}

// Pause stops every process of the cluster (SIGSTOP) and returns a function
// that resumes them (SIGCONT). It fails as Processes does.
func (p *Postgres) Pause() (resume func() error, err error) {
	pids, err := p.Processes()
	if err != nil {
		return nil, fmt.Errorf("pause PostgreSQL: %w", err)
	}
	// Children first, so that the postmaster does not see them vanish.
	for i := len(pids) - 1; i >= 0; i-- {
		_ = syscall.Kill(pids[i], syscall.SIGSTOP) // a backend may have just exited
	}
	return func() error {
		var errs []error
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("resume PostgreSQL process %d: %w", pid, err))
			}
		}
		return errors.Join(errs...)
	}, nil
}

// Stop stops the cluster (pg_ctl stop -m fast) and keeps its data: a later
// StartPostgres with the same Dir starts it again. Without
// PostgresConfig.Keep, the watchdog still destroys it if this process dies
// before Destroy.
func (p *Postgres) Stop(ctx context.Context) error {
	if _, err := p.run(ctx, "stop", p.dir); err != nil {
		return fmt.Errorf("stop PostgreSQL: %w", err)
	}
	if p.keep {
		p.watchdog.end()
		p.watchdog = nil
	}
	return nil
}

// Destroy stops the cluster, deletes its data directory and the temporary
// directory StartPostgres made for it, and ends the watchdog.
func (p *Postgres) Destroy() error {
	p.watchdog.end()
	p.watchdog = nil
	var errs []error
	if _, err := p.run(context.Background(), "destroy", p.dir); err != nil {
		errs = append(errs, err)
	}
	if p.temp != "" {
		errs = append(errs, os.RemoveAll(p.temp))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy PostgreSQL in %s: %w", p.dir, err)
	}
	return nil
}

// nonEmpty returns the strings that are not empty.
func nonEmpty(s ...string) []string {
	var out []string
	for _, v := range s {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}
