package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// procStats reads a process's resident set (VmRSS), its peak (VmHWM) and
// its CPU time from /proc. Linux only; elsewhere the figures stay zero.
type procStats struct {
	rssBytes     int64
	peakRSSBytes int64
	cpuSeconds   float64
}

func readProcStats(pid int) procStats {
	var s procStats
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		scanner := bufio.NewScanner(f)
		for scanner.Scan() {
			name, rest, _ := strings.Cut(scanner.Text(), ":")
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			switch name {
			case "VmHWM":
				s.peakRSSBytes = kb << 10
			case "VmRSS":
				s.rssBytes = kb << 10
			}
		}
		f.Close()
	}
	if st, err := devcluster.ReadProcessStat(pid); err == nil {
		s.cpuSeconds = st.CPUSeconds
	}
	return s
}

// postmasterPID returns the pid of the postmaster that serves pool: the
// parent of one of its backends. Only meaningful for a cluster on this
// machine; 0 when it cannot be told.
func postmasterPID(ctx context.Context, pool *pgxpool.Pool) int {
	var backend int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0
	}
	st, err := devcluster.ReadProcessStat(backend)
	if err != nil {
		return 0
	}
	return st.ParentPID
}

// onThisMachine tells whether pool's server listens on loopback or a unix
// socket: its processes are then this machine's, and their CPU time can be
// read from /proc.
func onThisMachine(pool *pgxpool.Pool) bool {
	host := pool.Config().ConnConfig.Host
	if strings.HasPrefix(host, "/") || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// resetPeakRSS starts a new peak for VmHWM (Linux 4.0 and later); a
// failure only means that the next peak covers more than one run.
func resetPeakRSS(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// selfCPUSeconds is the CPU time ledgerbench has used.
func selfCPUSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

// memoryBytes is the machine's memory (MemTotal), or 0 if unknown.
func memoryBytes() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// loadAverage is the 1-minute load average, or 0 if unknown.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	load, _ := strconv.ParseFloat(strings.Fields(string(data) + " 0")[0], 64)
	return load
}
