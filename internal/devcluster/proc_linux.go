//go:build linux

package devcluster

import "syscall"

// DieWithParent returns the attributes of a child process that make the
// kernel kill it (SIGKILL) when this process exits, so that a harness that
// is killed leaves no ledgerd or worker behind. Strictly, the signal comes
// when the OS thread that started the child exits, which in a Go program is
// when the program does, unless the goroutine that started it had locked
// its thread and ended.
func DieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
