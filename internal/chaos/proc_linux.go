//go:build linux

package chaos

import "syscall"

// childProcAttr makes a child process die with the harness (the kernel
// sends it SIGKILL when the harness exits), so that a killed harness
// leaves no ledgerd or worker behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
