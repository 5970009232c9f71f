package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// ProcessSpec is what a worker process does: the JSON that the harness
// passes to `ledgerchaos worker --spec`.
type ProcessSpec struct {
	// Targets are the ledgerd addresses (the proxies) to spread calls over.
	Targets []string `json:"targets"`
	// DatabaseURL is the sinks' database.
	DatabaseURL string `json:"database_url"`
	// Workload is the scenario's workload.
	Workload Workload `json:"workload"`
	// Workers are the process's workers, one goroutine each.
	Workers []workerSpec `json:"workers"`
}

// WorkerMain runs a worker process: the workers of the spec given as
// --spec JSON, writing the history to stdout as JSON lines, until stdin
// ends (the harness closes it to stop the process) or ctx ends. Each
// worker finishes the key it has before it returns.
func WorkerMain(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "--spec" {
		return errors.New("usage: worker --spec JSON (started by the harness, not by hand)")
	}
	var spec ProcessSpec
	if err := json.Unmarshal([]byte(args[1]), &spec); err != nil {
		return fmt.Errorf("worker --spec: %w", err)
	}
	tr := &tracer{rec: newLineRecorder(stdout)}
	client, err := newClient(spec.Targets, tr, spec.Workload.AttemptTimeout)
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()
	sink, err := openSink(ctx, spec.DatabaseURL, int32(len(spec.Workers)+1))
	if err != nil {
		return err
	}
	defer sink.Close()

	stop, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	go func() {
		_, _ = io.Copy(io.Discard, stdin) // until the harness closes it
		stopWorkers()
	}()
	w := &workers{client: client, sink: sink, tracer: tr, load: spec.Workload}
	var wg sync.WaitGroup
	for _, ws := range spec.Workers {
		wg.Go(func() { w.run(stop, ws) })
	}
	wg.Wait()
	return nil
}

// workerProcess is a worker process the harness started.
type workerProcess struct {
	name    string
	command []string // the worker command, without --spec
	spec    ProcessSpec
	logPath string

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{} // closed once the process exited and its output was read
}

// start starts the process and feeds its history into rec.
func (p *workerProcess) start(rec Recorder) error {
	spec, err := json.Marshal(p.spec)
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	args := append(append([]string{}, p.command[1:]...), "--spec", string(spec))
	cmd := exec.Command(p.command[0], args...)
	cmd.Stderr = logFile
	cmd.SysProcAttr = devcluster.DieWithParent()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start worker %s: %w", p.name, err)
	}
	p.cmd, p.stdin, p.exited = cmd, stdin, make(chan struct{})
	go func(exited chan struct{}) {
		if err := decodeLines(stdout, rec); err != nil {
			fmt.Fprintf(logFile, "ledgerchaos: reading %s's history: %v\n", p.name, err)
		}
		_ = cmd.Wait()
		close(exited)
	}(p.exited)
	return nil
}

// signal sends sig to the process.
func (p *workerProcess) signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// stop asks the process to finish (its stdin closes) and waits for it, at
// most for limit; then it is killed. The process is resumed first, in
// case it was paused.
func (p *workerProcess) stop(limit time.Duration) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// kill kills the process (SIGKILL) and waits until it is gone.
func (p *workerProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// workerLogPath is where a worker process's stderr goes.
func workerLogPath(dir, name string) string { return filepath.Join(dir, "worker-"+name+".log") }
