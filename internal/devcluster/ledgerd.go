package devcluster

import (
	"context"
	"crypto/tls"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const (
	// logTailLines is how much of its log a ledgerd that failed to start
	// shows in the error.
	logTailLines = 20

	// healthPollInterval is how often a starting ledgerd is asked whether
	// it serves.
	healthPollInterval = 50 * time.Millisecond
)

// LedgerdConfig configures StartLedgerd. Zero fields take their defaults.
type LedgerdConfig struct {
	// Binary is the ledgerd to run, e.g. one made by BuildLedgerd. Required.
	Binary string
	// DatabaseURL is the database ledgerd serves over. It is passed as
	// LEDGER_DATABASE_URL, not as a flag that ps would show. Required.
	DatabaseURL string
	// Args are flags of `ledgerd serve`, which come after the --listen-addr
	// StartLedgerd sets (a flag given twice takes its last value). The
	// health check speaks plaintext gRPC unless TLS is set: Args turn TLS
	// on only together with TLS. Say
	// --insecure-dev for a ledgerd without authentication, and
	// --http-addr off when nothing needs its HTTP port. Defaults to none.
	Args []string
	// Name names the process in errors. Defaults to "ledgerd".
	Name string
	// TLS is the client side of the health check for a ledgerd whose Args
	// serve TLS (--tls-cert-file): it must trust ledgerd's certificate.
	// Defaults to nil: plaintext.
	TLS *tls.Config
	// LogPath is the file that gets ledgerd's stdout and stderr, appended to
	// at every start. Defaults to a file in a new temporary directory, which
	// Stop removes: give a path to read the log after Stop.
	LogPath string
	// ReadyTimeout bounds each start: until the health service answers
	// SERVING. Defaults to 2m, for a loaded machine and the migrations.
	ReadyTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM, while ledgerd
	// drains, before it kills the process. Defaults to 30s; give it more
	// than ledgerd's --shutdown-timeout.
	StopTimeout time.Duration
}

// Ledgerd is a `ledgerd serve` process on a port of 127.0.0.1 that stays the
// same across restarts.
type Ledgerd struct {
	cfg     LedgerdConfig
	addr    string
	tempDir string   // holds the log when LedgerdConfig.LogPath is empty
	proc    *process // the latest start; nil before the first
}

// process is one run of the binary.
type process struct {
	cmd       *exec.Cmd
	logOffset int64         // where this run's lines begin in the log
	exited    chan struct{} // closed once cmd has been waited for
	err       error         // cmd's exit, once exited is closed
}

// StartLedgerd starts `ledgerd serve` on a free port of 127.0.0.1 and waits
// until its gRPC health service answers SERVING. If ledgerd exits first
// because another process took the port, it tries again on a new one (3 times
// in all). It fails when cfg lacks Binary or DatabaseURL, or when ledgerd
// exits or does not serve within ReadyTimeout (it is killed then); the error
// holds the last lines of its log.
func StartLedgerd(ctx context.Context, cfg LedgerdConfig) (*Ledgerd, error) {
	return startLedgerd(ctx, cfg, freeAddr)
}

// startLedgerd is StartLedgerd with the choice of address to listen on.
func startLedgerd(ctx context.Context, cfg LedgerdConfig, pickAddr func() (string, error)) (*Ledgerd, error) {
	if cfg.Name == "" {
		cfg.Name = "ledgerd"
	}
	if cfg.Binary == "" || cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("start %s: LedgerdConfig needs Binary and DatabaseURL", cfg.Name)
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	l := &Ledgerd{cfg: cfg}
	if l.cfg.LogPath == "" {
		dir, err := os.MkdirTemp("", "ledgerd-")
		if err != nil {
			return nil, fmt.Errorf("start %s: make a directory for its log: %w", cfg.Name, err)
		}
		l.tempDir, l.cfg.LogPath = dir, filepath.Join(dir, "ledgerd.log")
	}
	var errs []error
	for range startAttempts {
		addr, err := pickAddr()
		if err != nil {
			errs = append(errs, err)
			break
		}
		l.addr = addr
		addrInUse, err := l.start(ctx)
		if err == nil {
			return l, nil
		}
		errs = append(errs, err)
		if !addrInUse {
			break
		}
	}
	l.removeTempDir()
	return nil, errors.Join(errs...)
}

// freeAddr returns host:port of a free port of 127.0.0.1.
func freeAddr() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// Restart starts the process again on the same address, after it exited or
// was stopped, and waits until it serves. It fails as StartLedgerd does, and
// when the process is still running; after Stop, it needs a LogPath of the
// caller's, as Stop removed the temporary one.
func (l *Ledgerd) Restart(ctx context.Context) error {
	_, err := l.start(ctx)
	return err
}

// start runs the binary and waits until it serves. When it fails, the
// process is gone, and addrInUse tells whether it exited because its
// address was taken.
func (l *Ledgerd) start(ctx context.Context) (addrInUse bool, err error) {
	name := l.cfg.Name
	if l.Running() {
		return false, fmt.Errorf("start %s: it is running already (PID %d)", name, l.PID())
	}
	logFile, err := os.OpenFile(l.cfg.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, fmt.Errorf("start %s: open its log: %w", name, err)
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	offset, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return false, fmt.Errorf("start %s: open its log: %w", name, err)
	}
	cmd := exec.Command(l.cfg.Binary, append([]string{"serve", "--listen-addr", l.addr}, l.cfg.Args...)...)
	cmd.Env = append(os.Environ(), "LEDGER_DATABASE_URL="+l.cfg.DatabaseURL)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = DieWithParent()
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("start %s (%s): %w", name, l.cfg.Binary, err)
	}
	p := &process{cmd: cmd, logOffset: offset, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	l.proc = p
	if err := l.awaitServing(ctx, p); err != nil {
		_ = cmd.Process.Kill()
		<-p.exited
		tail := l.logTail(p.logOffset, logTailLines)
		return strings.Contains(tail, "address already in use"),
			fmt.Errorf("start %s on %s: %w; the end of its log (%s):\n%s", name, l.addr, err, l.cfg.LogPath, tail)
	}
	return false, nil
}

// awaitServing asks the health service whether it serves until it answers
// SERVING, the process exits, ctx ends or ReadyTimeout passes.
func (l *Ledgerd) awaitServing(ctx context.Context, p *process) error {
	creds := insecure.NewCredentials()
	if l.cfg.TLS != nil {
		creds = credentials.NewTLS(l.cfg.TLS)
	}
	conn, err := grpc.NewClient(l.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("connect to its health service: %w", err)
	}
	defer func() { _ = conn.Close() }()
	health := healthpb.NewHealthClient(conn)
	deadline := time.NewTimer(l.cfg.ReadyTimeout)
	defer deadline.Stop()
	for {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		r, err := health.Check(callCtx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("it exited before it served (%w)", p.err)
		case <-ctx.Done():
			return fmt.Errorf("wait for it to serve: %w", ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("it did not serve within %s", l.cfg.ReadyTimeout)
		case <-time.After(healthPollInterval):
		}
	}
}

// Name returns LedgerdConfig.Name.
func (l *Ledgerd) Name() string { return l.cfg.Name }

// Addr returns the gRPC address, 127.0.0.1:port.
func (l *Ledgerd) Addr() string { return l.addr }

// LogPath returns the file that gets the process's output.
func (l *Ledgerd) LogPath() string { return l.cfg.LogPath }

// PID returns the process's ID: the running one's, or the last one's.
func (l *Ledgerd) PID() int {
	if l.proc == nil {
		return 0
	}
	return l.proc.cmd.Process.Pid
}

// Running reports whether the process runs.
func (l *Ledgerd) Running() bool {
	if l.proc == nil {
		return false
	}
	select {
	case <-l.proc.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process. It fails when the process is not
// running.
func (l *Ledgerd) Signal(sig syscall.Signal) error {
	if !l.Running() {
		return fmt.Errorf("signal %s: it is not running", l.cfg.Name)
	}
	if err := l.proc.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", l.cfg.Name, err)
	}
	return nil
}

// Wait waits for the process to exit, at most for limit, and returns its
// exit error: nil for a clean exit, an *exec.ExitError otherwise. It fails
// when the process still runs after limit.
func (l *Ledgerd) Wait(limit time.Duration) error {
	if l.proc == nil {
		return nil
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-l.proc.exited:
		return l.proc.err
	case <-timer.C:
		return fmt.Errorf("%s still runs %s later", l.cfg.Name, limit)
	}
}

// Stop ends the process: SIGTERM, on which ledgerd drains and exits, then
// SIGKILL if it has not exited after StopTimeout. It returns the exit
// error of a process that did not exit cleanly, or says that it had to be
// killed; nil when it was not running. A temporary log is removed.
func (l *Ledgerd) Stop() error {
	defer l.removeTempDir()
	if !l.Running() {
		return nil
	}
	_ = l.proc.cmd.Process.Signal(syscall.SIGTERM)
	err := l.Wait(l.cfg.StopTimeout)
	if !l.Running() {
		if err != nil {
			return fmt.Errorf("stop %s: %w", l.cfg.Name, err)
		}
		return nil
	}
	_ = l.proc.cmd.Process.Kill()
	return errors.Join(fmt.Errorf("stop %s: it did not exit within %s of SIGTERM; killed", l.cfg.Name, l.cfg.StopTimeout),
		l.Wait(l.cfg.StopTimeout))
}

// LogTail returns the last n lines of the log.
func (l *Ledgerd) LogTail(n int) string {
	return l.logTail(0, n)
}

// logTail returns the last n lines of the log after offset.
func (l *Ledgerd) logTail(offset int64, n int) string {
	data, err := os.ReadFile(l.cfg.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	data = data[min(offset, int64(len(data))):]
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// removeTempDir removes the temporary directory of the log, if any.
func (l *Ledgerd) removeTempDir() {
	if l.tempDir != "" {
		_ = os.RemoveAll(l.tempDir)
		l.tempDir = ""
	}
}
