package devcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// The timings of the HA cluster's Patroni members: a leader key lives for
// haTTL unless renewed; each member runs its loop every haLoopWait;
// Patroni requires loop_wait + 2*retry_timeout <= ttl.
const (
	haTTL          = 10
	haLoopWait     = 2
	haRetryTimeout = 4
)

const (
	// haStartTimeout bounds the bring-up of a cluster: etcd, the primary's
	// initdb, the standby's base backup, the synchronous standby chosen.
	haStartTimeout = 3 * time.Minute
	// haHealTimeout bounds the wait for a healthy cluster after a fault: a
	// failover, the old primary rewound and back as the synchronous standby.
	haHealTimeout = 3 * time.Minute
	// restTimeout bounds one call of a member's REST API.
	restTimeout = 2 * time.Second
	// switchoverTimeout bounds a switchover: Patroni answers once the
	// candidate is promoted.
	switchoverTimeout = 2 * time.Minute
)

// HAConfig configures StartHA. Zero fields take their defaults.
type HAConfig struct {
	// Dir holds the cluster: etcd's data, each member's data directory,
	// configuration and logs. Defaults to a new temporary directory. It is
	// removed by Destroy, and by the watchdog if this process dies first.
	Dir string
	// Fsync keeps fsync on. Without it, the members run with fsync off and
	// synchronous_commit on: an acknowledged commit is on both members and
	// survives any crash of processes, not of the machine. Defaults to
	// false.
	Fsync bool
	// Log receives the progress of the bring-up. Defaults to none.
	Log io.Writer
}

// HACluster is a PostgreSQL cluster managed by Patroni on 127.0.0.1: one
// etcd member, a primary and a synchronous standby (synchronous_mode), each
// member's PostgreSQL and Patroni run as the postgres user when this
// process is root. Patroni fails over when the primary dies or loses etcd;
// clients find the primary with the multi-host URL.
//
// Each member reaches etcd, and the other member reaches its PostgreSQL
// for replication, through a Link: Isolate cuts both, so that a member is
// partitioned from the rest of the cluster while clients still reach it.
type HACluster struct {
	dir      string
	temp     bool // dir was made by StartHA
	bindir   string
	log      io.Writer
	etcd     *exec.Cmd
	etcdPort int
	members  []*HAMember
	watchdog *watchdog
	owner    *syscall.Credential // the postgres user, when root
}

// HAMember is one Patroni member of an HACluster.
type HAMember struct {
	// Name is the member's Patroni name: "pg0", "pg1".
	Name string
	// Port is its PostgreSQL's port on 127.0.0.1, which clients dial.
	Port int
	// RESTPort is its Patroni REST API's port on 127.0.0.1.
	RESTPort int

	dir     string
	patroni *exec.Cmd
	dcs     *Link // this member's Patroni → etcd
	repl    *Link // the other member → this member's PostgreSQL
}

// StartHA brings up a Patroni cluster of two members, installing Patroni,
// etcd and PostgreSQL (Debian packages, when root) if they are missing, and
// returns once the primary serves, the standby streams synchronously and
// the database "ledger" exists. What it started is torn down if it fails.
func StartHA(ctx context.Context, cfg HAConfig) (c *HACluster, err error) {
	ctx, cancel := context.WithTimeout(ctx, haStartTimeout)
	defer cancel()
	root, err := ModuleRoot()
	if err != nil {
		return nil, fmt.Errorf("start the HA cluster: %w", err)
	}
	c = &HACluster{dir: cfg.Dir, log: cfg.Log}
	if c.log == nil {
		c.log = io.Discard
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("start the HA cluster: %w", err), c.Destroy())
			c = nil
		}
	}()
	if _, err := runScript(ctx, c.log, filepath.Join(root, "scripts", "deps.sh"), "ha"); err != nil {
		return c, err
	}
	if c.bindir, err = runScript(ctx, c.log, filepath.Join(root, "scripts", "pg.sh"), "bindir"); err != nil {
		return c, err
	}
	if err := c.makeDir(); err != nil {
		return c, err
	}
	for i := range 2 {
		m := &HAMember{Name: fmt.Sprintf("pg%d", i), dir: filepath.Join(c.dir, fmt.Sprintf("pg%d", i))}
		c.members = append(c.members, m)
	}
	if err := c.writeTeardownScript(); err != nil {
		return c, err
	}
	if c.watchdog, err = startWatchdog(filepath.Join(c.dir, "teardown.sh"), "destroy", c.dir, []string{c.dir}); err != nil {
		return c, err
	}
	if err := c.startEtcd(ctx); err != nil {
		return c, err
	}
	for _, m := range c.members {
		if err := c.startMember(m, cfg.Fsync); err != nil {
			return c, err
		}
		if m == c.members[0] { // the first bootstraps the cluster; the other clones it
			if _, err := c.waitPrimary(ctx); err != nil {
				return c, err
			}
		}
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return c, err
	}
	return c, c.createDatabase(ctx)
}

// makeDir makes the cluster's directory, owned by the postgres user when
// root.
func (c *HACluster) makeDir() error {
	if c.dir == "" {
		// Short: the members' unix sockets live inside it.
		dir, err := os.MkdirTemp("", "lha")
		if err != nil {
			return err
		}
		c.dir, c.temp = dir, true
	} else if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("the HA cluster runs as the postgres user: %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	c.owner = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return os.Chown(c.dir, int(uid), int(gid))
}

// mkdirOwned makes a directory of the cluster, owned by its user.
func (c *HACluster) mkdirOwned(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if c.owner != nil {
		return os.Chown(dir, int(c.owner.Uid), int(c.owner.Gid))
	}
	return nil
}

// command prepares a program of the cluster, run as its user, killed if
// this process dies, its output appended to logPath.
func (c *HACluster) command(logPath, name string, args ...string) (*exec.Cmd, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = DieWithParent()
	cmd.SysProcAttr.Credential = c.owner
	cmd.Env = append(os.Environ(), "HOME="+c.dir)
	return cmd, nil
}

// start starts cmd and records its PID in pidFile for the teardown script.
func (c *HACluster) start(cmd *exec.Cmd, pidFile string) error {
	err := cmd.Start()
	if f, ok := cmd.Stdout.(*os.File); ok {
		_ = f.Close() // the child has its own copy
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

func (c *HACluster) startEtcd(ctx context.Context) error {
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	dataDir := filepath.Join(c.dir, "etcd")
	if err := c.mkdirOwned(dataDir); err != nil {
		return err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	cmd, err := c.command(filepath.Join(c.dir, "etcd.log"), "etcd",
		"--name", "etcd0", "--data-dir", dataDir,
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "etcd0="+peerURL, "--initial-cluster-state", "new")
	if err != nil {
		return err
	}
	fmt.Fprintf(c.log, "devcluster: starting etcd on %s\n", clientURL)
	if err := c.start(cmd, filepath.Join(c.dir, "etcd.pid")); err != nil {
		return err
	}
	c.etcd, c.etcdPort = cmd, clientPort
	return waitFor(ctx, "etcd to answer", func() bool {
		status, _, _ := httpGet(ctx, clientURL+"/health")
		return status == http.StatusOK
	})
}

// startMember writes the member's Patroni configuration and starts it.
func (c *HACluster) startMember(m *HAMember, fsync bool) error {
	var err error
	if m.Port, err = freePort(); err != nil {
		return err
	}
	if m.RESTPort, err = freePort(); err != nil {
		return err
	}
	if m.dcs, err = NewLink(fmt.Sprintf("127.0.0.1:%d", c.etcdPort)); err != nil {
		return err
	}
	if m.repl, err = NewLink(fmt.Sprintf("127.0.0.1:%d", m.Port)); err != nil {
		return err
	}
	if err := c.mkdirOwned(m.dir); err != nil {
		return err
	}
	configPath := filepath.Join(m.dir, "patroni.yml")
	if err := os.WriteFile(configPath, []byte(c.patroniConfig(m, fsync)), 0o644); err != nil {
		return err
	}
	cmd, err := c.command(filepath.Join(m.dir, "patroni.log"), "patroni", configPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.log, "devcluster: starting Patroni member %s (PostgreSQL on 127.0.0.1:%d)\n", m.Name, m.Port)
	if err := c.start(cmd, filepath.Join(m.dir, "patroni.pid")); err != nil {
		return err
	}
	m.patroni = cmd
	return nil
}

// patroniConfig is a member's patroni.yml (JSON is YAML). Its settings:
//   - ttl, loop_wait, retry_timeout: fail over within seconds;
//   - synchronous_mode: a commit is acknowledged once the synchronous
//     standby has it, and only that standby may be promoted;
//   - primary_start_timeout 0: a crashed primary fails over at once
//     instead of being restarted in place first;
//   - use_pg_rewind and wal_log_hints: a demoted primary rejoins as a
//     standby without a new base backup, and with one when it cannot;
//   - basebackup checkpoint fast: a standby is cloned in seconds;
//   - etcd3 use_proxies: Patroni dials the configured address (the Link)
//     rather than the addresses etcd advertises;
//   - connect_address is the member's replication Link: the other member
//     streams and rewinds through it.
func (c *HACluster) patroniConfig(m *HAMember, fsync bool) string {
	fsyncSetting := "off"
	if fsync {
		fsyncSetting = "on"
	}
	config := map[string]any{
		"scope":     "ledgerd",
		"namespace": "/devcluster/",
		"name":      m.Name,
		"log":       map[string]any{"level": "INFO"},
		"restapi": map[string]any{
			"listen":          fmt.Sprintf("127.0.0.1:%d", m.RESTPort),
			"connect_address": fmt.Sprintf("127.0.0.1:%d", m.RESTPort),
		},
		"etcd3": map[string]any{"hosts": m.dcs.Addr(), "protocol": "http", "use_proxies": true},
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				"ttl":                     haTTL,
				"loop_wait":               haLoopWait,
				"retry_timeout":           haRetryTimeout,
				"maximum_lag_on_failover": 1 << 20,
				"synchronous_mode":        true,
				"primary_start_timeout":   0,
				"postgresql": map[string]any{
					"use_pg_rewind": true,
					"parameters": map[string]any{
						"wal_level":             "replica",
						"hot_standby":           "on",
						"wal_log_hints":         "on",
						"max_wal_senders":       10,
						"max_replication_slots": 10,
						"max_connections":       200,
						"fsync":                 fsyncSetting,
						"synchronous_commit":    "on",
						"wal_keep_size":         "256MB",
					},
				},
			},
			"initdb": []any{map[string]string{"encoding": "UTF8"}, map[string]string{"locale": "C"}},
		},
		"postgresql": map[string]any{
			"listen":          fmt.Sprintf("127.0.0.1:%d", m.Port),
			"connect_address": m.repl.Addr(),
			"data_dir":        filepath.Join(m.dir, "data"),
			"bin_dir":         c.bindir,
			"pgpass":          filepath.Join(m.dir, "pgpass"),
			"authentication": map[string]any{
				"superuser":   map[string]string{"username": "postgres"},
				"replication": map[string]string{"username": "postgres"},
				"rewind":      map[string]string{"username": "postgres"},
			},
			"parameters": map[string]any{
				"unix_socket_directories": m.dir,
				"logging_collector":       "on",
				"log_directory":           filepath.Join(m.dir, "log"),
				"log_filename":            "postgresql.log",
				"log_line_prefix":         "%m [%p] ",
			},
			"pg_hba": []string{
				"local all all trust",
				"host all all 127.0.0.1/32 trust",
				"host replication all 127.0.0.1/32 trust",
			},
			"basebackup": []any{map[string]string{"checkpoint": "fast"}},
			"remove_data_directory_on_rewind_failure":     true,
			"remove_data_directory_on_diverged_timelines": true,
		},
		"tags": map[string]bool{"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false},
	}
	b, _ := json.MarshalIndent(config, "", "  ") // maps of strings, numbers and bools
	return string(b) + "\n"
}

// writeTeardownScript writes the script the watchdog runs if this process
// dies: it kills, by the PIDs recorded in the cluster's directory, every
// Patroni member, its PostgreSQL (postmaster and children) and etcd.
func (c *HACluster) writeTeardownScript() error {
	script := `#!/bin/sh
# teardown.sh ACTION DIR: kill what the HA cluster in DIR runs, by PID.
dir="$2"
for f in "$dir"/*/patroni.pid "$dir"/etcd.pid; do
	[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
done
for f in "$dir"/*/data/postmaster.pid; do
	[ -f "$f" ] || continue
	pm="$(head -n 1 "$f")"
	pkill -9 -P "$pm" 2>/dev/null
	kill -9 "$pm" 2>/dev/null
done
exit 0
`
	return os.WriteFile(filepath.Join(c.dir, "teardown.sh"), []byte(script), 0o755)
}

// URL is the connection URL of the database "ledger" that follows the
// primary: both members' addresses, tried in order, and
// target_session_attrs=read-write, so that a connection lands on whichever
// member is the primary now.
func (c *HACluster) URL() string { return c.url("read-write") }

// StandbyURL is like URL, but prefers a standby (target_session_attrs
// prefer-standby): for the reads that may be stale.
func (c *HACluster) StandbyURL() string { return c.url("prefer-standby") }

func (c *HACluster) url(attrs string) string {
	hosts := make([]string, len(c.members))
	for i, m := range c.members {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", m.Port)
	}
	return fmt.Sprintf("postgres://postgres@%s/ledger?target_session_attrs=%s&connect_timeout=2&sslmode=disable",
		strings.Join(hosts, ","), attrs)
}

// MemberURL is the connection URL of one member's database "ledger".
func (m *HAMember) MemberURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/ledger?connect_timeout=2&sslmode=disable", m.Port)
}

// Members returns the cluster's members.
func (c *HACluster) Members() []*HAMember { return c.members }

// Dir returns the cluster's directory: each member's patroni.log and
// PostgreSQL log (pgN/log/postgresql.log) are there.
func (c *HACluster) Dir() string { return c.dir }

// Primary returns the member that Patroni reports as the running primary
// now, or an error if none is.
func (c *HACluster) Primary(ctx context.Context) (*HAMember, error) {
	for _, m := range c.members {
		if m.status(ctx, "/primary") == http.StatusOK {
			return m, nil
		}
	}
	return nil, errors.New("no member is the primary")
}

// WaitNewPrimary waits (at most 3 minutes) until a member other than old
// is the primary, and returns it.
func (c *HACluster) WaitNewPrimary(ctx context.Context, old *HAMember) (*HAMember, error) {
	ctx, cancel := context.WithTimeout(ctx, haHealTimeout)
	defer cancel()
	var primary *HAMember
	err := waitFor(ctx, "a new primary", func() bool {
		primary, _ = c.Primary(ctx)
		return primary != nil && primary != old
	})
	return primary, err
}

// waitPrimary waits until a member is the primary.
func (c *HACluster) waitPrimary(ctx context.Context) (*HAMember, error) {
	var primary *HAMember
	err := waitFor(ctx, "a primary", func() bool {
		primary, _ = c.Primary(ctx)
		return primary != nil
	})
	return primary, err
}

// WaitHealthy waits (at most 3 minutes) until one member is the primary and
// every other one is its synchronous standby, streaming: then a failover
// loses no acknowledged commit.
func (c *HACluster) WaitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, haHealTimeout)
	defer cancel()
	return waitFor(ctx, "a primary and a synchronous standby", func() bool {
		primaries, syncs := 0, 0
		for _, m := range c.members {
			if m.status(ctx, "/primary") == http.StatusOK {
				primaries++
			} else if m.status(ctx, "/sync") == http.StatusOK {
				syncs++
			}
		}
		return primaries == 1 && syncs == len(c.members)-1
	})
}

// KillPrimary kills the primary's PostgreSQL (SIGKILL to the postmaster and
// every backend) as a crash would, leaving its Patroni running: Patroni
// promotes the standby and brings the old primary back as a standby. It
// returns the member that was killed.
func (c *HACluster) KillPrimary(ctx context.Context) (*HAMember, error) {
	m, err := c.Primary(ctx)
	if err != nil {
		return nil, fmt.Errorf("kill the primary: %w", err)
	}
	pm, err := m.postmaster()
	if err != nil {
		return nil, fmt.Errorf("kill the primary %s: %w", m.Name, err)
	}
	children := ChildrenOf(pm)
	_ = syscall.Kill(pm, syscall.SIGKILL)
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL) // a backend may have just exited
	}
	return m, nil
}

// Switchover asks Patroni for a clean switchover from the primary to the
// synchronous standby, and returns once Patroni reports it done.
func (c *HACluster) Switchover(ctx context.Context) (from, to *HAMember, err error) {
	if from, err = c.Primary(ctx); err != nil {
		return nil, nil, fmt.Errorf("switchover: %w", err)
	}
	for _, m := range c.members {
		if m != from {
			to = m
		}
	}
	body, _ := json.Marshal(map[string]string{"leader": from.Name, "candidate": to.Name})
	ctx, cancel := context.WithTimeout(ctx, switchoverTimeout)
	defer cancel()
	status, answer, err := from.call(ctx, http.MethodPost, "/switchover", body)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d: %s", status, strings.TrimSpace(string(answer)))
	}
	if err != nil {
		return from, to, fmt.Errorf("switchover from %s to %s: %w", from.Name, to.Name, err)
	}
	return from, to, nil
}

// Isolate partitions member m from etcd and from the other member, while
// clients still reach its PostgreSQL: its Patroni can no longer renew the
// leader key, and the other member no longer streams from it. heal ends
// the partition.
func (c *HACluster) Isolate(m *HAMember) (heal func()) {
	m.dcs.Cut()
	m.repl.Cut()
	return func() {
		m.dcs.Heal()
		m.repl.Heal()
	}
}

// Destroy stops every member (Patroni stops its PostgreSQL) and etcd, kills
// what remains by PID, and removes the cluster's directory.
func (c *HACluster) Destroy() error {
	if c == nil {
		return nil
	}
	for _, m := range c.members {
		if m.patroni != nil {
			_ = m.patroni.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, m := range c.members {
		if m.patroni != nil {
			stopped := make(chan struct{})
			go func() { _ = m.patroni.Wait(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(30 * time.Second):
				_ = m.patroni.Process.Kill()
				<-stopped
			}
		}
	}
	if c.etcd != nil {
		_ = c.etcd.Process.Kill()
		_ = c.etcd.Wait()
	}
	var errs []error
	if c.dir != "" {
		// Whatever still runs (a postmaster Patroni did not stop) dies by PID.
		if out, err := exec.Command("sh", filepath.Join(c.dir, "teardown.sh"), "destroy", c.dir).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("teardown: %w: %s", err, out))
		}
	}
	for _, m := range c.members {
		if m.dcs != nil {
			errs = append(errs, m.dcs.Close())
		}
		if m.repl != nil {
			errs = append(errs, m.repl.Close())
		}
	}
	c.watchdog.end()
	if c.dir != "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

// createDatabase creates the database "ledger" on the primary.
func (c *HACluster) createDatabase(ctx context.Context) error {
	primary, err := c.Primary(ctx)
	if err != nil {
		return err
	}
	url := strings.Replace(primary.MemberURL(), "/ledger?", "/postgres?", 1)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to the primary: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE ledger"); err != nil {
		return fmt.Errorf("create the database ledger: %w", err)
	}
	return nil
}

// postmaster returns the PID of the member's running postmaster.
func (m *HAMember) postmaster() (int, error) {
	b, err := os.ReadFile(filepath.Join(m.dir, "data", "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("find the postmaster: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("find the postmaster: postmaster.pid holds no PID: %q", first)
	}
	if name := processName(pid); name != "postgres" && name != "postmaster" {
		return 0, fmt.Errorf("find the postmaster: PID %d is %q, not postgres", pid, name)
	}
	return pid, nil
}

// status asks the member's Patroni REST API about a GET path (/primary,
// /sync, ...): 200 for yes, 0 when the member does not answer.
func (m *HAMember) status(ctx context.Context, path string) int {
	ctx, cancel := context.WithTimeout(ctx, restTimeout)
	defer cancel()
	status, _, _ := m.call(ctx, http.MethodGet, path, nil)
	return status
}

// call calls the member's Patroni REST API and returns the status and body.
func (m *HAMember) call(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, fmt.Sprintf("http://127.0.0.1:%d%s", m.RESTPort, path), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	return doHTTP(req)
}

func httpGet(ctx context.Context, url string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, restTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	return doHTTP(req)
}

func doHTTP(req *http.Request) (int, []byte, error) {
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = res.Body.Close() }()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// waitFor polls done every 100ms until it is true or ctx ends.
func waitFor(ctx context.Context, what string, done func() bool) error {
	for !done() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// runScript runs a script of the module and returns its trimmed stdout;
// its stderr goes to log and, when it fails, into the error.
func runScript(ctx context.Context, log io.Writer, script string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, io.MultiWriter(&stderr, log)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", script, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}
