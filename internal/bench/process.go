package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// modulePath identifies ledgerd's source tree, where ledgerbench finds
// scripts/pg.sh and ./cmd/ledgerd.
const modulePath = "github.com/ledgerd/ledgerd"

// findModuleRoot returns the directory of ledgerd's go.mod, searched from
// the working directory upwards.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside ledgerd's source tree (no go.mod of " + modulePath + " above the working directory): " +
				"run ledgerbench from the checkout, or give --database-url and --ledgerd-bin")
		}
		dir = parent
	}
}

// freeAddr returns a free 127.0.0.1 address (free when asked: another
// process may take it before it is used).
func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

// privatePostgres is a cluster started with scripts/pg.sh.
type privatePostgres struct {
	script string
	dir    string
	temp   string // removed at the end; empty when dir is the caller's
	stderr io.Writer
}

// startPostgres starts a private cluster in dir (a temporary one when dir
// is empty) with scripts/pg.sh, durable (fsync on; synchronous_commit is
// PostgreSQL's default, on), and returns its URL.
func startPostgres(ctx context.Context, root, dir string, stderr io.Writer) (*privatePostgres, string, error) {
	pg := &privatePostgres{script: filepath.Join(root, "scripts", "pg.sh"), dir: dir, stderr: stderr}
	if dir == "" {
		temp, err := os.MkdirTemp("", "ledgerbench-")
		if err != nil {
			return nil, "", err
		}
		pg.temp, pg.dir = temp, filepath.Join(temp, "pg")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, pg.script, "start", pg.dir, port)
	// LEDGER_PG_THROWAWAY=1 would create the cluster with fsync off: the
	// figures would be fake.
	cmd.Env = append(os.Environ(), "LEDGER_PG_THROWAWAY=0")
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		pg.stop()
		return nil, "", fmt.Errorf("start PostgreSQL with %s: %w", pg.script, err)
	}
	return pg, strings.TrimSpace(string(out)), nil
}

// stop stops the cluster; a temporary one is deleted.
func (pg *privatePostgres) stop() {
	action := "stop"
	if pg.temp != "" {
		action = "destroy"
	}
	cmd := exec.Command(pg.script, action, pg.dir)
	cmd.Stderr = pg.stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(pg.stderr, "ledgerbench: %s PostgreSQL in %s: %v\n", action, pg.dir, err)
	}
	if pg.temp != "" {
		_ = os.RemoveAll(pg.temp)
	}
}

// ledgerdProcess is a ledgerd that ledgerbench started.
type ledgerdProcess struct {
	cmd     *exec.Cmd
	addr    string
	logPath string
	exited  chan struct{}
	waitErr error
	temp    string
}

// buildLedgerd builds ./cmd/ledgerd into dir and returns the binary.
func buildLedgerd(ctx context.Context, root, dir string, stderr io.Writer) (string, error) {
	bin := filepath.Join(dir, "ledgerd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/ledgerd")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ledgerd: %w", err)
	}
	return bin, nil
}

// startLedgerd starts `ledgerd serve` over databaseURL in development mode
// on a free loopback port, without its HTTP port and sweeper (retention is
// measured on its own, by --purge), allowing the contended workload's
// short leases; extra flags come last and win. It returns once ledgerd
// answers its health check as SERVING.
func startLedgerd(ctx context.Context, bin, databaseURL string, dbMaxConns int, extra []string, stderr io.Writer) (*ledgerdProcess, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	temp, err := os.MkdirTemp("", "ledgerbench-ledgerd-")
	if err != nil {
		return nil, err
	}
	p := &ledgerdProcess{addr: addr, logPath: filepath.Join(temp, "ledgerd.log"), exited: make(chan struct{}), temp: temp}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	args := append([]string{"serve",
		"--insecure-dev",
		"--listen-addr", addr,
		"--http-addr", "off",
		"--sweep-interval", "0",
		"--min-lease-ttl", "10ms",
		"--max-request-timeout", "1h", // PurgeExpired over many rows
		"--db-max-conns", strconv.Itoa(dbMaxConns),
		"--log-format", "json",
		"--log-level", "warn",
	}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "LEDGER_DATABASE_URL="+databaseURL)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.awaitServing(ctx, 2*time.Minute); err != nil {
		p.stop(stderr)
		return nil, err
	}
	return p, nil
}

// awaitServing polls the health service until it answers SERVING.
func (p *ledgerdProcess) awaitServing(ctx context.Context, timeout time.Duration) error {
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		r, err := health.Check(callCtx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("ledgerd exited at start-up (%v); its log:\n%s", p.waitErr, p.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ledgerd did not serve within %s; its log:\n%s", timeout, p.logTail())
		}
	}
}

// logTail returns the last lines of ledgerd's log.
func (p *ledgerdProcess) logTail() string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// stop stops ledgerd gracefully (SIGTERM), killing it if it has not
// stopped after 30s, and passes on the errors it logged.
func (p *ledgerdProcess) stop(stderr io.Writer) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	for line := range strings.SplitSeq(p.logTail(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			fmt.Fprintf(stderr, "ledgerbench: ledgerd logged: %s\n", line)
		}
	}
	_ = os.RemoveAll(p.temp)
}

// procStats reads a process's peak resident set (VmHWM) and CPU time from
// /proc. Linux only; elsewhere the figures stay zero.
type procStats struct {
	peakRSSBytes int64
	cpuSeconds   float64
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

func readProcStats(pid int) procStats {
	var s procStats
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		scanner := bufio.NewScanner(f)
		for scanner.Scan() {
			if rest, ok := strings.CutPrefix(scanner.Text(), "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				s.peakRSSBytes = kb << 10
			}
		}
		f.Close()
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// The fields after the command name (which may hold spaces) in
		// parentheses; utime and stime are fields 14 and 15 of the line.
		if i := bytes.LastIndexByte(data, ')'); i >= 0 {
			fields := strings.Fields(string(data[i+1:]))
			if len(fields) > 12 {
				utime, _ := strconv.ParseInt(fields[11], 10, 64)
				stime, _ := strconv.ParseInt(fields[12], 10, 64)
				s.cpuSeconds = float64(utime+stime) / clockTicks
			}
		}
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
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
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

// clusterCPUSeconds is the CPU time a cluster's processes have used: the
// postmaster's own and that of its children gone (cutime, cstime), and the
// live children's (backends, WAL writer, checkpointer...). A backend that
// exits between two readings moves from one sum to the other, so the
// difference of two readings stays right.
func clusterCPUSeconds(postmaster int) float64 {
	if postmaster == 0 {
		return 0
	}
	total := 0.0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		// After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
		fields := strings.Fields(string(data[i+1:]))
		if len(fields) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		if pid != postmaster && ppid != postmaster {
			continue
		}
		last := 12
		if pid == postmaster {
			last = 14
		}
		for _, f := range fields[11 : last+1] {
			ticks, _ := strconv.ParseInt(f, 10, 64)
			total += float64(ticks) / clockTicks
		}
	}
	return total
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
