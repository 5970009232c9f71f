//go:build !linux

package devcluster

import "syscall"

// DieWithParent has nothing to add outside Linux: children do not die with
// their parent there, and their starter must stop them itself.
func DieWithParent() *syscall.SysProcAttr { return nil }
