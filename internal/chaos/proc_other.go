//go:build !linux

package chaos

import "syscall"

// childProcAttr has nothing to add outside Linux: children do not die with
// the harness there, and Run stops them itself.
func childProcAttr() *syscall.SysProcAttr { return nil }
