package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Timeouts of the ledgerd processes the harness runs. Requests carry the
// client's attempt deadline (see Config.AttemptTimeout); the statement
// timeout bounds a statement that the database holds.
const (
	ledgerdStatementTimeout = 2 * time.Second
	ledgerdShutdownTimeout  = 10 * time.Second
	// ledgerdReadyTimeout bounds a ledgerd's start: listening and /readyz
	// answering 200.
	ledgerdReadyTimeout = 30 * time.Second
)

// ledgerd is one ledgerd process the harness started. It is restarted on
// the same ports, so that its proxy's backend stays the same.
type ledgerd struct {
	name     string
	binary   string
	url      string // the database
	addr     string // gRPC, 127.0.0.1:port
	httpAddr string // /readyz
	logPath  string

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	err    error         // cmd's exit, once exited is closed
}

func newLedgerd(name, binary, databaseURL, dir string) (*ledgerd, error) {
	grpcPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	return &ledgerd{
		name:     name,
		binary:   binary,
		url:      databaseURL,
		addr:     "127.0.0.1:" + strconv.Itoa(grpcPort),
		httpAddr: "127.0.0.1:" + strconv.Itoa(httpPort),
		logPath:  filepath.Join(dir, name+".log"),
	}, nil
}

// start runs ledgerd serve and waits until it is ready.
func (l *ledgerd) start(ctx context.Context) error {
	logFile, err := os.OpenFile(l.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	cmd := exec.Command(l.binary, "serve",
		"--insecure-dev",
		"--database-url", l.url,
		"--listen-addr", l.addr,
		"--http-addr", l.httpAddr,
		"--db-max-conns", "8",
		"--db-statement-timeout", ledgerdStatementTimeout.String(),
		"--shutdown-timeout", ledgerdShutdownTimeout.String(),
		"--request-timeout", "5s",
		"--min-lease-ttl", "100ms",
		"--sweep-interval", "0",
		"--log-format", "json",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", l.name, err)
	}
	l.cmd, l.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		l.err = cmd.Wait()
		close(exited)
	}(l.exited)
	return l.waitReady(ctx)
}

// waitReady polls /readyz until it answers 200, the process exits or
// ledgerdReadyTimeout passes.
func (l *ledgerd) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ledgerdReadyTimeout)
	defer cancel()
	// No keep-alive: nothing of the client may outlive the check.
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.httpAddr+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-l.exited:
			return fmt.Errorf("%s exited before it was ready (%v); see %s", l.name, l.err, l.logPath)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s; see %s", l.name, ledgerdReadyTimeout, l.logPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// running reports whether the process runs.
func (l *ledgerd) running() bool {
	if l.cmd == nil {
		return false
	}
	select {
	case <-l.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the process, if it runs.
func (l *ledgerd) signal(sig syscall.Signal) error {
	if !l.running() {
		return fmt.Errorf("%s is not running", l.name)
	}
	return l.cmd.Process.Signal(sig)
}

// wait waits for the process to exit, at most for limit, and returns its
// exit error.
func (l *ledgerd) wait(limit time.Duration) error {
	if l.cmd == nil {
		return nil
	}
	select {
	case <-l.exited:
		return l.err
	case <-time.After(limit):
		return fmt.Errorf("%s still runs %s later", l.name, limit)
	}
}

// stop ends the process: SIGTERM, then SIGKILL if it has not exited after
// its drain time.
func (l *ledgerd) stop() error {
	if !l.running() {
		return nil
	}
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	if err := l.wait(ledgerdShutdownTimeout + 5*time.Second); err == nil || !l.running() {
		return err
	}
	_ = l.cmd.Process.Kill()
	return errors.Join(fmt.Errorf("%s did not stop on SIGTERM; killed", l.name), l.wait(5*time.Second))
}
