package devcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// ProcessStat is what /proc/PID/stat says about a process (Linux only).
type ProcessStat struct {
	// State is the state letter: "R" running, "S" sleeping, "T" stopped,
	// "Z" a zombie, and so on.
	State string
	// ParentPID is the PID of the parent process.
	ParentPID int
	// CPUSeconds is the CPU time, user and system, the process has used.
	CPUSeconds float64
	// WaitedChildrenCPUSeconds is the CPU time used by the children that
	// have exited and been waited for (cutime and cstime).
	WaitedChildrenCPUSeconds float64
}

// ReadProcessStat reads /proc/PID/stat. It fails when the process is gone,
// or on a system without /proc.
func ReadProcessStat(pid int) (ProcessStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcessStat{}, fmt.Errorf("read the stat of process %d: %w", pid, err)
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
	// the fields start after the last ')'. After it: state(0) ppid(1) ...
	// utime(11) stime(12) cutime(13) cstime(14).
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 15 {
		return ProcessStat{}, fmt.Errorf("read the stat of process %d: %d fields, want at least 15", pid, len(fields))
	}
	ticks := func(i int) float64 {
		n, _ := strconv.ParseInt(fields[i], 10, 64)
		return float64(n) / clockTicks
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ProcessStat{
		State:                    fields[0],
		ParentPID:                ppid,
		CPUSeconds:               ticks(11) + ticks(12),
		WaitedChildrenCPUSeconds: ticks(13) + ticks(14),
	}, nil
}

// ChildrenOf lists the live processes whose parent is pid, from /proc; none
// on a system without /proc.
func ChildrenOf(pid int) []int {
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
		if st, err := ReadProcessStat(child); err == nil && st.ParentPID == pid {
			children = append(children, child)
		}
	}
	return children
}

// CPUSecondsWithChildren is the CPU time that pid and its children have used:
// its own, that of its children gone (waited for), and that of its live
// children; not that of grandchildren, which a PostgreSQL cluster does not
// have. A child that exits between two readings moves from one sum to the
// other, so the difference of two readings stays right. It is 0 when pid is
// 0 or gone, or on a system without /proc.
func CPUSecondsWithChildren(pid int) float64 {
	if pid == 0 {
		return 0
	}
	st, err := ReadProcessStat(pid)
	if err != nil {
		return 0
	}
	total := st.CPUSeconds + st.WaitedChildrenCPUSeconds
	for _, child := range ChildrenOf(pid) {
		if st, err := ReadProcessStat(child); err == nil {
			total += st.CPUSeconds
		}
	}
	return total
}

// processName returns /proc/PID/comm, or "" if the process is gone.
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// waitGone waits until pid no longer exists or is a zombie, at most for
// limit, and reports whether it went.
func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		if st, err := ReadProcessStat(pid); err == nil && st.State == "Z" {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
