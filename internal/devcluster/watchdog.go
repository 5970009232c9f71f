package devcluster

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// watchdogScript waits for the process $1 to exit, then runs
// `bash <pg.sh> <action> <dir>` ($2 $3 $4) and removes the directories that
// follow. It ignores the terminal's signals, so that ^C ends the process it
// watches but not its cleanup.
const watchdogScript = `trap '' INT TERM HUP
while kill -0 "$1" 2>/dev/null; do sleep 1; done
bash "$2" "$3" "$4" >/dev/null 2>&1
shift 4
for dir do rm -rf -- "$dir"; done`

// watchdog is a detached shell that cleans a cluster up once this process
// is gone. It matters when the process never gets to do it itself: a
// panicking test, go test -timeout, a kill, ^C.
type watchdog struct {
	cmd *exec.Cmd
}

// startWatchdog starts a watchdog that runs `pg.sh action dir` once this
// process has exited, then removes the directories in remove.
func startWatchdog(script, action, dir string, remove []string) (*watchdog, error) {
	args := append([]string{"-c", watchdogScript, "devcluster-watchdog",
		strconv.Itoa(os.Getpid()), script, action, dir}, remove...)
	cmd := exec.Command("sh", args...)
	// Stdin, Stdout and Stderr stay nil (/dev/null): the watchdog must not
	// hold the pipes go test reads, or go test would wait for it to exit.
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the cleanup watchdog: %w", err)
	}
	return &watchdog{cmd: cmd}, nil
}

// end stops the watchdog without letting it clean up: the caller has.
func (w *watchdog) end() {
	if w == nil {
		return
	}
	_ = w.cmd.Process.Kill()
	_ = w.cmd.Wait()
}
