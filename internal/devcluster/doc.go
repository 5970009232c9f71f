// Package devcluster runs the pieces of a ledgerd deployment as processes on
// this machine, for the tests (internal/pgtest), the chaos harness
// (internal/chaos) and the benchmark (internal/bench): a private PostgreSQL
// cluster, ledgerd processes built from this source tree, and what /proc says
// about them.
//
// A private cluster is made by scripts/pg.sh, in a directory of the caller's
// or a temporary one, on a free port of 127.0.0.1:
//
//	pg, err := devcluster.StartPostgres(ctx, devcluster.PostgresConfig{Durability: devcluster.Throwaway})
//	if err != nil { ... }
//	defer pg.Destroy()
//	pool, err := pgxpool.New(ctx, pg.URL())
//
// A watchdog process stops or destroys the cluster if the caller dies first
// (a panic, a test's -timeout, a kill, ^C). The cluster can also be restarted
// and paused, as the chaos harness does.
//
// A ledgerd is built with [BuildLedgerd] and started with [StartLedgerd], which
// returns once its gRPC health service answers SERVING, or fails with the tail
// of its log:
//
//	bin := filepath.Join(dir, "ledgerd")
//	err := devcluster.BuildLedgerd(ctx, root, bin)
//	l, err := devcluster.StartLedgerd(ctx, devcluster.LedgerdConfig{
//		Binary: bin, DatabaseURL: pg.URL(), Args: []string{"--insecure-dev", "--http-addr", "off"},
//	})
//	defer l.Stop()
//
// A high-availability cluster — etcd and two Patroni members, a primary and
// a synchronous standby — is brought up by [StartHA], which installs Patroni
// and etcd when they are missing (as root, from Debian's packages). Its URL
// lists both members, and a connection lands on the primary; the chaos
// harness's pg-failover scenario and the failover tests kill, switch over
// and isolate the primary:
//
//	ha, err := devcluster.StartHA(ctx, devcluster.HAConfig{})
//	defer ha.Destroy()
//	pool, err := pgxpool.New(ctx, ha.URL())
//	killed, err := ha.KillPrimary(ctx)
//	primary, err := ha.WaitNewPrimary(ctx, killed)
//
// `make ha` runs one by hand and prints its URL.
//
// StartPostgres and StartLedgerd pick their port themselves and, if another process takes it between
// the probe and the bind, try again on a new one.
//
// The processes are Linux processes first: the watchdog needs a POSIX shell,
// and [Postgres.Pause], [Postgres.Processes] and the CPU figures read /proc.
package devcluster
