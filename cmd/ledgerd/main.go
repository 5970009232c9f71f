// Command ledgerd is the idempotency ledger server.
//
//	ledgerd serve     serve gRPC, and HTTP/JSON, metrics and health probes on
//	                  a second port, once pending migrations are applied (the
//	                  ports are bound at once; health says NOT_SERVING until
//	                  the database is reached)
//	ledgerd migrate   apply pending migrations and exit
//	ledgerd restore-fence --reason R
//	                  after restoring a backup, before any replica serves:
//	                  raise the fencing epoch (see docs/operations.md,
//	                  "Backup and restore")
//	ledgerd version   print the version, commit, build date and Go release
//	                  (also --version)
//
// Every flag has an environment variable fallback, LEDGER_ followed by the
// flag name in upper case with '-' as '_' (e.g. --database-url and
// LEDGER_DATABASE_URL), and a key of the same name in the YAML file that
// --config names; `ledgerd serve --help` lists them, and `ledgerd config`
// prints the values in force and where each came from.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"

	"github.com/ledgerd/ledgerd/internal/tracing"
	"github.com/ledgerd/ledgerd/internal/version"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

func main() {
	setGCPercent()
	ctx, stop := notifyStop(context.Background())
	ctx, stopReloads := notifyReload(ctx)
	err := run(ctx, os.Args[1:], processEnvironment{}, os.Stdout, os.Stderr)
	stopReloads()
	stop() // not deferred: os.Exit below would skip it
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ledgerd:", err)
		}
		os.Exit(exitCode(err))
	}
}

// notifyStop returns a context that ends at the first SIGTERM or SIGINT,
// and that carries a channel closed at the second (see stopAgain), which
// cuts a lame-duck delay short. stop stops listening for them.
func notifyStop(parent context.Context) (ctx context.Context, stop func()) {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(parent)
	again := make(chan struct{})
	done := make(chan struct{})
	go func() {
		// The first signal stops the process gracefully, the second cuts the
		// lame-duck delay short; after it, signals have their default
		// effect: the third ends the process at once.
		for _, step := range []func(){cancel, func() { close(again); signal.Stop(signals) }} {
			select {
			case <-signals:
				step()
			case <-done:
				return
			}
		}
	}()
	return withStopAgain(ctx, again), func() {
		signal.Stop(signals)
		close(done)
		cancel()
	}
}

// stopAgainKey is the context key of the channel that is closed when the
// process is told to stop a second time.
type stopAgainKey struct{}

// withStopAgain returns ctx carrying again, a channel to be closed when the
// process is told to stop a second time, after ctx has ended.
func withStopAgain(ctx context.Context, again <-chan struct{}) context.Context {
	return context.WithValue(ctx, stopAgainKey{}, again)
}

// stopAgain returns the channel of withStopAgain, or nil (which never
// closes) if ctx carries none.
func stopAgain(ctx context.Context) <-chan struct{} {
	again, _ := ctx.Value(stopAgainKey{}).(<-chan struct{})
	return again
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

var errUsage = errors.New("usage")

const usage = `ledgerd is a central idempotency ledger over PostgreSQL.

Usage:
  ledgerd serve [flags]     serve gRPC (--listen-addr) and HTTP (--http-addr): HTTP/JSON for
                            every RPC, /metrics, /healthz and /readyz; the ports are bound at
                            once, and the ledger serves once the database is reached and
                            pending migrations are applied (unless --no-migrate)
  ledgerd migrate [flags]   apply pending migrations and exit
  ledgerd bootstrap --principal NAME [flags]
                            create the first platform-admin token (printed once)
  ledgerd restore-fence --reason TEXT [flags]
                            after restoring a backup, before any replica serves it: raise
                            the fencing epoch so that every new token is above every token
                            granted before the restore, and end the leases the backup holds
  ledgerd config [-o json] [flags]
                            print the configuration serve would run with, and where each
                            value comes from (default, file, env, flag), secrets redacted
  ledgerd version           print the version, commit, build date and Go release (also --version)

Run 'ledgerd serve --help' for the flags. Every flag can also be set with an
environment variable, LEDGER_ and the flag name in upper case, '-' as '_', or
in a YAML file named by --config (or LEDGER_CONFIG), whose keys are the flag
names: flags win over variables, variables over the file. On SIGHUP, or when
the file changes, serve applies the new log level and rate limits, and logs
which other changes need a restart.
`

// run is main without the process: arguments, environment and output are
// passed in, so tests can drive it.
func run(ctx context.Context, args []string, getenv environment, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		cfg, err := parseConfig("serve", args[1:], getenv, stderr)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, getenv.Getenv, stdout)
	case "migrate":
		cfg, err := parseConfig("migrate", args[1:], getenv, stderr)
		if err != nil {
			return err
		}
		return migrate(ctx, cfg, stdout)
	case "bootstrap":
		cfg, err := parseConfig("bootstrap", args[1:], getenv, stderr)
		if err != nil {
			return err
		}
		return bootstrap(ctx, cfg, stdout)
	case "restore-fence":
		cfg, err := parseConfig("restore-fence", args[1:], getenv, stderr)
		if err != nil {
			return err
		}
		return restoreFence(ctx, cfg, stdout)
	case "config":
		cfg, err := parseConfig("config", args[1:], getenv, stderr)
		if err != nil {
			return err
		}
		return printConfig(cfg, stdout)
	case "version", "--version", "-version":
		return version.Write(stdout, "ledgerd", version.Get())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
}

// poolPurpose is what a pool's sessions do: serve calls, or apply
// migrations.
type poolPurpose int

const (
	forServing poolPurpose = iota
	// forMigrations sessions run without a statement timeout (unless the
	// DSN sets one): a migration may rewrite a large table, and one that
	// fails halfway is rolled back and has to start over.
	forMigrations
	// forReads sessions serve the reads that may be stale, on
	// --read-database-url (a hot standby): the serving sessions' timeouts,
	// --read-db-max-conns, and ledger.ConfigureReadPool instead of
	// ConfigurePool (any server will do; see there).
	forReads
)

// openPool returns a pool over --database-url after checking that the
// database answers, so that a wrong URL or an unreachable database fails a
// command at once.
func openPool(ctx context.Context, cfg config, purpose poolPurpose) (*pgxpool.Pool, error) {
	pool, err := newPool(ctx, cfg, purpose)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s: %w", describeDatabase(pool), err)
	}
	return pool, nil
}

// describeDatabase names a pool's database for messages: host, port and
// database, never the password.
func describeDatabase(pool *pgxpool.Pool) string {
	c := pool.Config().ConnConfig
	return fmt.Sprintf("database %s:%d/%s", c.Host, c.Port, c.Database)
}

// newPool returns a pool over --database-url (--read-database-url for
// reads) without connecting: it fails only if the URL is not one. Its
// sessions get ledgerd's application_name and session timeouts (see
// setSessionTimeout); options are the ledger's (tracing).
func newPool(ctx context.Context, cfg config, purpose poolPurpose, options ...ledger.PoolOption) (*pgxpool.Pool, error) {
	databaseURL, flagName := cfg.DatabaseURL, "--database-url"
	if purpose == forReads {
		databaseURL, flagName = cfg.ReadDatabaseURL, "--read-database-url"
	}
	poolConfig, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// The parse error may quote the URL, password included: do not print it.
		return nil, fmt.Errorf("%s is not a valid PostgreSQL URL or DSN", flagName)
	}
	poolConfig.MaxConns = cfg.DBMaxConns
	if purpose == forReads {
		poolConfig.MaxConns = cfg.ReadDBMaxConns
		ledger.ConfigureReadPool(poolConfig, options...) // any server, as the URL says
	} else {
		// A writable primary only, no cancel requests: safe across failovers.
		ledger.ConfigurePool(poolConfig, options...)
	}
	params := poolConfig.ConnConfig.RuntimeParams
	if _, ok := params["application_name"]; !ok {
		params["application_name"] = "ledgerd"
		if purpose == forReads { // sessions that may be cancelled, unlike the others
			params["application_name"] = "ledgerd-reads"
		}
	}
	statementTimeout := cfg.DBStatementTimeout
	if purpose == forMigrations {
		statementTimeout = 0
		poolConfig.MaxConns = min(poolConfig.MaxConns, 2) // the migration lock's session, and one more
	}
	setSessionTimeout(params, "statement_timeout", statementTimeout)
	setSessionTimeout(params, "idle_in_transaction_session_timeout", cfg.DBIdleInTransactionTimeout)
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return pool, nil
}

// setSessionTimeout sets a timeout parameter of every session, in
// milliseconds (0: none), unless timeout is negative (the database's own
// setting stays) or the DSN sets the parameter itself, directly or in
// "options" (-c name=value): the DSN wins.
func setSessionTimeout(params map[string]string, name string, timeout time.Duration) {
	if _, set := params[name]; set || timeout < 0 || strings.Contains(params["options"], name) {
		return
	}
	params[name] = strconv.FormatInt(timeout.Milliseconds(), 10)
}

func migrate(ctx context.Context, cfg config, stdout io.Writer) error {
	logger := cfg.logger(stdout)
	pool, err := openPool(ctx, cfg, forMigrations)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := ledger.Migrate(ctx, pool, logger)
	if err != nil {
		return err
	}
	logger.Info("migrations applied", "count", len(applied), "versions", applied)
	return nil
}

// serve runs `ledgerd serve`. It binds both ports and serves before it can
// reach the database: until the start-up (prepare) has succeeded, health
// says NOT_SERVING and the ledger's RPCs are answered UNAVAILABLE, while
// the server retries it (see server.Server.Start). Only a malformed URL or
// a port that cannot be bound fails at once.
//
// Tracing is set up from the OTEL_* variables (see internal/tracing); off
// unless they ask for it.
func serve(ctx context.Context, cfg config, getenv func(string) string, stdout io.Writer) error {
	// The level is a variable: a reload may change it (see watchConfig).
	logLevel := new(slog.LevelVar)
	logLevel.Set(cfg.LogLevel)
	logger := cfg.loggerAt(stdout, logLevel)
	traces, err := tracing.FromEnv(ctx, getenv)
	if err != nil {
		return err
	}
	var poolOptions []ledger.PoolOption
	if traces.TracerProvider != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logger.Warn("tracing", "error", err) }))
		logger.Info("tracing on: spans of every RPC and database statement", "exporter", traces.Description)
		poolOptions = append(poolOptions, ledger.WithTracerProvider(traces.TracerProvider))
		defer func() { // the very last: the spans of the drain are sent too
			flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := traces.Shutdown(flushCtx); err != nil {
				logger.Warn("tracing: the last spans were not sent", "error", err)
			}
		}()
	}
	pool, err := newPool(ctx, cfg, forServing, poolOptions...)
	if err != nil {
		return err
	}
	defer pool.Close() // last: after the server has drained
	// The reads that may be stale, on a standby: its pool connects lazily,
	// so that a standby out of reach delays nothing (the primary serves
	// those reads until it answers).
	if cfg.ReadDatabaseURL != "" {
		readPool, err := newPool(ctx, cfg, forReads, poolOptions...)
		if err != nil {
			return err
		}
		defer readPool.Close()
		cfg.Ledger.ReadPool = readPool
	}
	// What runs beside the server once it has started (see
	// startBackground) stops after it has drained, before the pool closes.
	stopBackground := func() {}
	defer func() { stopBackground() }()

	cfg.Ledger.Logger = logger
	store, err := ledger.New(pool, cfg.Ledger)
	if err != nil {
		return err
	}
	metrics := server.NewMetrics(store, server.MetricsConfig{Logger: logger})
	var auth *server.Auth
	if cfg.InsecureDev {
		logger.Warn("INSECURE DEVELOPMENT MODE: no authentication, every caller may do everything; loopback addresses only",
			"listen_addr", cfg.ListenAddr, "http_addr", cfg.HTTPAddr)
	} else {
		auth = server.NewAuth(store, server.AuthConfig{RefreshInterval: cfg.AuthRefreshInterval, Logger: logger, Metrics: metrics,
			FailedAuthLimit: cfg.FailedAuthLimit})
	}
	var serverTLS *server.TLS
	var serverOptions []grpc.ServerOption
	if cfg.TLS != nil {
		tlsConfig := *cfg.TLS
		tlsConfig.Logger, tlsConfig.Metrics = logger, metrics
		if serverTLS, err = server.NewTLS(tlsConfig); err != nil {
			return err
		}
		serverOptions = append(serverOptions, serverTLS.ServerOption())
	}
	waitCap := cfg.MaxWaitingReservesPerPrincipal
	if waitCap == 0 {
		waitCap = -1 // the flag's "no cap" is the server's negative
	}
	srv, err := server.New(store, server.Config{
		Logger:                         logger,
		DefaultTimeout:                 cfg.RequestTimeout,
		MaxTimeout:                     cfg.MaxRequestTimeout,
		Limits:                         cfg.GRPC,
		RateLimits:                     cfg.RateLimits,
		MaxWaitingReservesPerPrincipal: waitCap,
		Metrics:                        metrics,
		Auth:                           auth,
		ServerOptions:                  serverOptions,
		Starting:                       true,
		HealthCheckInterval:            cfg.HealthCheckInterval,
		HealthCheckTimeout:             cfg.HealthCheckTimeout,
		TracerProvider:                 traces.TracerProvider,
	})
	if err != nil {
		return err
	}
	// Both ports are bound before either serves, so that a taken port fails
	// the start-up.
	// A server that never serves still holds its stream workers: stop it on
	// the way out of a failed start.
	abandon := func(err error) error {
		srv.Shutdown(context.WithoutCancel(ctx))
		return err
	}
	lis, err := listen(cfg.ListenAddr, cfg.MaxConnections)
	if err != nil {
		return abandon(fmt.Errorf("listen: %w", err))
	}
	if cfg.InsecureDev {
		if err := boundToLoopback("--listen-addr", lis.Addr()); err != nil {
			_ = lis.Close()
			return abandon(err)
		}
	}
	// The gateway's in-process connections to the gRPC server close once
	// everything has stopped.
	gatewayCtx, closeGateway := context.WithCancel(context.WithoutCancel(ctx))
	defer closeGateway()
	httpSrv, httpLis, err := listenHTTP(gatewayCtx, cfg, srv, serverTLS, metrics, logger)
	if err != nil {
		_ = lis.Close()
		return abandon(err)
	}
	httpAddr := "off"
	if httpLis != nil {
		httpAddr = httpLis.Addr().String()
	}
	metricsSrv, metricsLis, err := listenMetrics(cfg, metrics, logger)
	if err != nil {
		_ = lis.Close()
		if httpLis != nil {
			_ = httpLis.Close()
		}
		return abandon(err)
	}
	metricsAddr := httpAddr // /metrics on the HTTP port
	if metricsLis != nil {
		metricsAddr = metricsLis.Addr().String()
		// Closed last: the scraper sees the drain.
		defer func() { _ = metricsSrv.Close() }()
		go func() { _ = metricsSrv.Serve(metricsLis) }()
	}
	// "ledgerd listening" once the ports are bound, "ledgerd serving" once
	// the start-up is done, with the same fields.
	addrs := []any{"version", version.Get().Version, "addr", lis.Addr().String(), "http_addr", httpAddr,
		"tls", cfg.TLS != nil, "db_max_conns", cfg.DBMaxConns, "coalesce", !cfg.Ledger.Coalesce.Disabled,
		"read_database", cfg.ReadDatabaseURL != "", "metrics_addr", metricsAddr}
	logger.Info("ledgerd listening", addrs...)

	if cfg.PprofAddr != "" {
		stopProfiles, err := serveProfiles(cfg.PprofAddr, logger)
		if err != nil {
			_ = lis.Close()
			return abandon(err)
		}
		defer stopProfiles()
	}

	stopWatching := watchConfig(ctx, cfg, reloadTargets{logLevel: logLevel, server: srv}, logger)
	defer stopWatching()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	httpServed := make(chan error, 1)
	if httpSrv != nil {
		go func() { httpServed <- httpSrv.Serve(httpLis) }()
	}

	// The start-up runs while the ports serve; it ends when it succeeds,
	// or when the process is told to stop first.
	startCtx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	startDone := make(chan error, 1)
	go func() {
		startDone <- srv.Start(startCtx, func(ctx context.Context) error { return prepare(ctx, cfg, pool, store, auth, logger) })
	}()
	var failure error
	started := false
	// refused receives the reason to stop that a background job finds (a
	// development-mode database that gains credentials).
	refused := make(chan error, 1)
	refuse := func(err error) {
		select {
		case refused <- err:
		default:
		}
	}
	for waiting := true; waiting; {
		select {
		case err := <-startDone:
			startDone = nil
			if err != nil {
				if ctx.Err() == nil { // refused (server.ErrStartRefused)
					failure = err
					waiting = false
				}
				continue // or ctx ended: the next turn sees it
			}
			started = true
			stopBackground = startBackground(ctx, cfg, pool, store, auth, metrics, logger, refuse)
			logger.Info("ledgerd serving", addrs...)
		case err := <-refused:
			failure = err
			waiting = false
		case err := <-served: // only on a failure: Shutdown has not been called
			failure = fmt.Errorf("serve: %w", err)
			served <- nil // for the wait below
			waiting = false
		case err := <-httpServed:
			failure = fmt.Errorf("serve HTTP: %w", err)
			httpServed <- http.ErrServerClosed
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}
	cancelStart()
	if startDone != nil && <-startDone == nil {
		started = true // it succeeded as the process was told to stop; nothing else started
	}

	// Shutting down, in this order:
	//  0. Lame duck, if the server has served and --lame-duck-delay is
	//     set: the gRPC health service and /readyz turn NOT_SERVING, while
	//     calls are served as usual for that long, so that load balancers
	//     stop routing here before anything is refused. A second SIGTERM
	//     or SIGINT cuts it short.
	//  1. Drain: health stays NOT_SERVING, its Watch streams end, and
	//     waiting Reserves answer at once, on either port.
	//  2. The HTTP server stops accepting and waits for its in-flight
	//     requests. They are gateway calls into the gRPC server, which
	//     must still serve them: stopped first, it would fail them with
	//     UNAVAILABLE.
	//  3. The gRPC server stops gracefully: in-flight RPCs finish, new ones
	//     are refused.
	//  4. The gateway's connections close, then the credentials refresh,
	//     the sweeper, the listener and the pool (deferred).
	// One --shutdown-timeout bounds steps 2 and 3 together; what still runs
	// when it is over is cut off.
	if started && failure == nil && cfg.LameDuckDelay > 0 {
		failure = lameDuck(ctx, cfg.LameDuckDelay, srv, served, httpServed, logger)
	}
	logger.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout)
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	srv.Drain()
	if httpSrv != nil {
		if err := httpSrv.Shutdown(drainCtx); err != nil {
			logger.Warn("HTTP graceful stop timed out; cutting remaining requests off", "error", err)
			_ = httpSrv.Close()
		}
		if err := <-httpServed; !errors.Is(err, http.ErrServerClosed) && failure == nil {
			failure = fmt.Errorf("serve HTTP: %w", err)
		}
	}
	srv.Shutdown(drainCtx)
	if err := <-served; err != nil && failure == nil {
		failure = fmt.Errorf("serve: %w", err)
	}
	if failure != nil {
		return failure
	}
	logger.Info("stopped")
	return nil
}

// lameDuck reports NOT_SERVING while it goes on serving calls, for delay or
// until the process is told to stop again or a server fails. It returns
// the failure, after putting the server's result back for the drain.
func lameDuck(ctx context.Context, delay time.Duration, srv *server.Server, served, httpServed chan error, logger *slog.Logger) error {
	logger.Info("lame duck: reporting NOT_SERVING while still serving calls, so that load balancers stop routing here", "delay", delay)
	srv.LameDuck()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-stopAgain(ctx):
		logger.Info("told to stop again: cutting the lame-duck delay short")
		return nil
	case err := <-served:
		served <- nil
		return fmt.Errorf("serve: %w", err)
	case err := <-httpServed:
		httpServed <- http.ErrServerClosed
		return fmt.Errorf("serve HTTP: %w", err)
	}
}

// prepare does what needs the database before ledgerd can serve: reach it,
// in development mode check that it holds no credentials (a refusal stops
// the start-up for good: see devmode.go), apply the pending migrations
// (with --no-migrate, check that there are none), and load the
// credentials. server.Server.Start runs it again until
// it succeeds, so every step may be repeated.
func prepare(ctx context.Context, cfg config, pool *pgxpool.Pool, store *ledger.Store, auth *server.Auth, logger *slog.Logger) error {
	pingCtx, cancel := context.WithTimeout(ctx, startPingTimeout)
	err := store.Ping(pingCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to %s: %w", describeDatabase(pool), err)
	}
	if cfg.InsecureDev {
		// Before migrating: a refused database is left as it was.
		err := checkDevelopmentDatabase(ctx, store, describeDatabase(pool))
		var shared *sharedDatabaseError
		if errors.As(err, &shared) {
			return fmt.Errorf("%w: %w", server.ErrStartRefused, err)
		}
		if err != nil {
			return err
		}
	}
	if cfg.NoMigrate {
		if err := ledger.CheckSchema(ctx, pool); err != nil {
			if errors.Is(err, ledger.ErrSchemaBehind) {
				return fmt.Errorf("%w: --no-migrate is set, so run 'ledgerd migrate'", err)
			}
			return err
		}
	} else {
		// The migrations' own pool, without a statement timeout; it does
		// not ping, so that its errors are the ledger's (ErrUnavailable for
		// a database out of reach).
		migrations, err := newPool(ctx, cfg, forMigrations)
		if err != nil {
			return err
		}
		applied, err := ledger.Migrate(ctx, migrations, logger)
		migrations.Close()
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			logger.Info("migrations applied", "versions", applied)
		}
	}
	if auth != nil {
		return loadCredentials(ctx, store, auth, logger)
	}
	return nil
}

// startPingTimeout bounds the first ping of each start-up attempt, which
// may have to open a connection (and a TLS session) to a database that
// does not answer.
const startPingTimeout = 10 * time.Second

// loadCredentials loads the tokens and role bindings, and warns when
// nobody can administer the ledger yet.
func loadCredentials(ctx context.Context, store *ledger.Store, auth *server.Auth, logger *slog.Logger) error {
	if err := auth.Load(ctx); err != nil {
		return fmt.Errorf("load credentials: %w", err)
	}
	bindings, err := store.RoleBindings(ctx)
	if err != nil {
		return fmt.Errorf("load credentials: %w", err)
	}
	admins := 0
	for _, b := range bindings {
		if b.Role == ledger.RolePlatformAdmin {
			admins++
		}
	}
	if admins == 0 {
		logger.Warn("authentication is on and nobody is a platform admin yet: create the first admin token with 'ledgerd bootstrap --principal NAME'")
	}
	return nil
}

// startBackground starts what runs beside the server once it has started:
// the listener that wakes waiting Reserves, the retention sweeper (unless
// --sweep-interval is 0), and the credentials refresh (with auth) or, in
// development mode, the check that the database still holds no
// credentials, which calls refuse if it does. The returned func stops
// them, last started first, and waits for them.
func startBackground(ctx context.Context, cfg config, pool *pgxpool.Pool, store *ledger.Store, auth *server.Auth,
	metrics *server.Metrics, logger *slog.Logger, refuse func(error),
) (stop func()) {
	var stops []func()
	// run runs job in a goroutine until stop, and logs its error.
	run := func(name string, job func(ctx context.Context) error) {
		jobCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		go func() { done <- job(jobCtx) }()
		stops = append(stops, func() {
			cancel()
			if err := <-done; err != nil {
				logger.Error(name, "error", err)
			}
		})
	}
	run("listener", store.Listen)
	if cfg.SweepInterval > 0 {
		run("sweeper", func(ctx context.Context) error {
			return store.RunSweeper(ctx, cfg.SweepInterval, server.SweepReporter(metrics, logger))
		})
	}
	if auth != nil {
		run("credentials refresh", auth.Run)
	}
	if cfg.InsecureDev {
		run("development database check", func(ctx context.Context) error {
			return watchDevelopmentDatabase(ctx, store, describeDatabase(pool), cfg.AuthRefreshInterval, logger, refuse)
		})
	}
	return func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
}

// listenHTTP binds the HTTP port (with TLS unless serverTLS is nil) and
// prepares its server, unless --http-addr is empty: then both are nil. The
// gateway calls the gRPC server in-process, so that it needs neither TLS
// nor a client certificate of its own.
func listenHTTP(ctx context.Context, cfg config, srv *server.Server, serverTLS *server.TLS, metrics *server.Metrics, logger *slog.Logger) (*http.Server, net.Listener, error) {
	if cfg.HTTPAddr == "" {
		return nil, nil, nil
	}
	if cfg.MetricsListenAddr != "" {
		metrics = nil // served on the internal listener only (see listenMetrics)
	}
	// The body limit defaults to the largest body whose request fits the
	// gRPC request limit (server.HTTPRequestBytes).
	handler, err := srv.HTTPHandler(ctx, server.HTTPConfig{
		Metrics:         metrics,
		Logger:          logger,
		MaxHeaderBytes:  cfg.HTTP.MaxHeaderBytes,
		BodyReadTimeout: cfg.HTTP.BodyReadTimeout,
		TrustedProxies:  cfg.HTTP.TrustedProxies,
		TLS:             serverTLS,
		DisableConsole:  !cfg.Console,
	})
	if err != nil {
		return nil, nil, err
	}
	lis, err := listen(cfg.HTTPAddr, cfg.MaxConnections)
	if err != nil {
		return nil, nil, fmt.Errorf("listen HTTP: %w", err)
	}
	if cfg.InsecureDev {
		if err := boundToLoopback("--http-addr", lis.Addr()); err != nil {
			_ = lis.Close()
			return nil, nil, err
		}
	}
	errorLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	if serverTLS != nil {
		lis = tls.NewListener(lis, serverTLS.HTTPConfig())
		errorLog = serverTLS.HTTPErrorLog(logger) // failed handshakes: sampled and counted
	}
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		// net/http refuses headers beyond this (431) before reading them
		// whole; the handler counts as gRPC does, and refuses the rest.
		MaxHeaderBytes: cfg.HTTP.MaxHeaderBytes,
		ErrorLog:       errorLog,
	}, lis, nil
}

// listen binds a port that holds at most maxConnections connections at once
// (0: no bound): beyond it, connections wait in the kernel's listen queue
// until one closes, so that callers who open connections and send nothing
// (each held at most --http-read-header-timeout or
// --grpc-connection-timeout before its first request) cannot take the
// memory of an unbounded number.
func listen(addr string, maxConnections int) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil || maxConnections == 0 {
		return lis, err
	}
	return netutil.LimitListener(lis, maxConnections), nil
}

// listenMetrics binds --metrics-listen-addr and prepares the server of
// /metrics on it, plain HTTP without authentication, for a scraper on a
// private network; both are nil without the flag (the HTTP port serves
// /metrics then).
func listenMetrics(cfg config, metrics *server.Metrics, logger *slog.Logger) (*http.Server, net.Listener, error) {
	if cfg.MetricsListenAddr == "" {
		return nil, nil, nil
	}
	lis, err := net.Listen("tcp", cfg.MetricsListenAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen --metrics-listen-addr: %w", err)
	}
	if cfg.InsecureDev {
		if err := boundToLoopback("--metrics-listen-addr", lis.Addr()); err != nil {
			_ = lis.Close()
			return nil, nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(logger))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second, // a scrape has no body
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}, lis, nil
}

// serveProfiles serves net/http/pprof on addr (a loopback address) until
// the returned func is called.
func serveProfiles(addr string, logger *slog.Logger) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen --pprof-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	profiles := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = profiles.Serve(lis) }()
	logger.Warn("serving Go profiles", "addr", lis.Addr().String())
	return func() { _ = profiles.Close() }, nil
}

// restoreFence raises the fencing epoch of a database restored from a
// backup (ledger.Store.RestoreFence), after applying the migrations the
// backup lacks, and prints what it did and the backup's high-water marks.
func restoreFence(ctx context.Context, cfg config, stdout io.Writer) error {
	if cfg.Reason == "" {
		return errors.New("--reason is required: why the fencing epoch is raised (the backup restored, the incident)")
	}
	// It rewrites every leased entry: no statement timeout.
	store, closeStore, err := adminStore(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	defer closeStore()
	fence, err := store.RestoreFence(ledger.WithCaller(ctx, "ledgerd-restore-fence"), cfg.Reason)
	if err != nil {
		return err
	}
	lastEventAt := "none"
	if fence.BackupLastEventAt != nil {
		lastEventAt = fence.BackupLastEventAt.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(stdout, "fencing epoch raised from %d to %d: every token granted from now on is at least %d\n",
		fence.PreviousEpoch, fence.Epoch, fence.TokenFloor)
	fmt.Fprintf(stdout, "leases ended: %d\n", fence.LeasesEnded)
	fmt.Fprintf(stdout, "the backup's last event: id %d at %s; its highest token: %d\n",
		fence.BackupLastEventID, lastEventAt, fence.BackupMaxToken)
	fmt.Fprintln(stdout, "keys completed after that event are not in this ledger and will run again, with tokens of the new epoch")
	return nil
}

// adminStore opens the store of a one-off administrative command
// (bootstrap, restore-fence) after applying pending migrations: its
// sessions are the migrations' (no statement timeout). Call closeStore
// when done.
func adminStore(ctx context.Context, cfg config, stdout io.Writer) (store *ledger.Store, closeStore func(), err error) {
	pool, err := openPool(ctx, cfg, forMigrations)
	if err != nil {
		return nil, nil, err
	}
	if _, err := ledger.Migrate(ctx, pool, cfg.logger(stdout)); err != nil {
		pool.Close()
		return nil, nil, err
	}
	if store, err = ledger.New(pool, cfg.Ledger); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return store, pool.Close, nil
}

// bootstrap creates a platform-admin binding and token for the first
// operator, and prints the token.
func bootstrap(ctx context.Context, cfg config, stdout io.Writer) error {
	if cfg.Principal == "" {
		return errors.New("--principal is required: the name of the first platform admin")
	}
	store, closeStore, err := adminStore(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	defer closeStore()
	token, secret, err := store.Bootstrap(ctx, cfg.Principal)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "platform-admin token for %s (id %s); it is shown only this once:\n%s\n", token.Principal, token.ID, secret)
	return nil
}
