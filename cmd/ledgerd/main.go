// Command ledgerd is the idempotency ledger server.
//
//	ledgerd serve     apply pending migrations, then serve gRPC, and HTTP/JSON,
//	                  metrics and health probes on a second port
//	ledgerd migrate   apply pending migrations and exit
//	ledgerd version   print the version
//
// Every flag has an environment variable fallback, LEDGER_ followed by the
// flag name in upper case with '-' as '_' (e.g. --database-url and
// LEDGER_DATABASE_URL); `ledgerd serve --help` lists them.
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
	"google.golang.org/grpc"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop() // not deferred: os.Exit below would skip it
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ledgerd:", err)
		}
		os.Exit(exitCode(err))
	}
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
  ledgerd serve [flags]     apply pending migrations (unless --no-migrate), then serve gRPC
                            (--listen-addr) and HTTP (--http-addr): HTTP/JSON for every
                            RPC, /metrics, /healthz and /readyz
  ledgerd migrate [flags]   apply pending migrations and exit
  ledgerd bootstrap --principal NAME [flags]
                            create the first platform-admin token (printed once)
  ledgerd version           print the version

Run 'ledgerd serve --help' for the flags. Every flag can also be set with an
environment variable: LEDGER_ and the flag name in upper case, '-' as '_'.
`

// run is main without the process: arguments, environment and output are
// passed in, so tests can drive it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
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
		return serve(ctx, cfg, stdout)
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
	case "version":
		fmt.Fprintln(stdout, "ledgerd", version)
		return nil
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
)

func openPool(ctx context.Context, cfg config, purpose poolPurpose) (*pgxpool.Pool, error) {
	poolConfig, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		// The parse error may quote the URL, password included: do not print it.
		return nil, errors.New("--database-url is not a valid PostgreSQL URL or DSN")
	}
	poolConfig.MaxConns = cfg.DBMaxConns
	params := poolConfig.ConnConfig.RuntimeParams
	if _, ok := params["application_name"]; !ok {
		params["application_name"] = "ledgerd"
	}
	statementTimeout := cfg.DBStatementTimeout
	if purpose == forMigrations {
		statementTimeout = 0
		poolConfig.MaxConns = min(poolConfig.MaxConns, 2) // the migration lock's session, and one more
	}
	setSessionTimeout(params, "statement_timeout", statementTimeout)
	setSessionTimeout(params, "idle_in_transaction_session_timeout", cfg.DBIdleInTransactionTimeout)
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	// The pool connects lazily: ping so that a wrong URL fails at start-up.
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s:%d/%s: %w", poolConfig.ConnConfig.Host,
			poolConfig.ConnConfig.Port, poolConfig.ConnConfig.Database, err)
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
	applied, err := applyMigrations(ctx, cfg, logger)
	if err != nil {
		return err
	}
	logger.Info("migrations applied", "count", len(applied), "versions", applied)
	return nil
}

// applyMigrations applies the pending migrations over a pool of its own,
// closed when they are done, whose sessions have no statement timeout.
func applyMigrations(ctx context.Context, cfg config, logger *slog.Logger) ([]int64, error) {
	pool, err := openPool(ctx, cfg, forMigrations)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	return ledger.Migrate(ctx, pool, logger)
}

func serve(ctx context.Context, cfg config, stdout io.Writer) error {
	logger := cfg.logger(stdout)
	pool, err := openPool(ctx, cfg, forServing)
	if err != nil {
		return err
	}
	defer pool.Close() // last: after the server has drained

	if cfg.NoMigrate {
		if err := ledger.CheckSchema(ctx, pool); err != nil {
			return err
		}
	} else if applied, err := applyMigrations(ctx, cfg, logger); err != nil {
		return err
	} else if len(applied) > 0 {
		logger.Info("migrations applied", "versions", applied)
	}

	cfg.Ledger.Logger = logger
	store, err := ledger.New(pool, cfg.Ledger)
	if err != nil {
		return err
	}
	// The listener wakes waiting Reserves; it stops after the server has
	// drained, before the pool closes.
	listenCtx, stopListening := context.WithCancel(context.WithoutCancel(ctx))
	listened := make(chan error, 1)
	go func() { listened <- store.Listen(listenCtx) }()
	defer func() {
		stopListening()
		if err := <-listened; err != nil {
			logger.Error("listener", "error", err)
		}
	}()
	metrics := server.NewMetrics(store, server.MetricsConfig{Logger: logger})
	if cfg.SweepInterval > 0 {
		// The sweeper stops after the servers, before the listener and the
		// pool (deferred calls run last first).
		sweepCtx, stopSweeping := context.WithCancel(context.WithoutCancel(ctx))
		swept := make(chan error, 1)
		go func() {
			swept <- store.RunSweeper(sweepCtx, cfg.SweepInterval, func(r ledger.SweepReport) {
				metrics.ObserveSweep(r)
				logSweep(logger, r)
			})
		}()
		defer func() {
			stopSweeping()
			if err := <-swept; err != nil {
				logger.Error("sweeper", "error", err)
			}
		}()
	}
	auth, err := startAuth(ctx, cfg, store, logger)
	if err != nil {
		return err
	}
	if auth != nil {
		defer func() {
			if err := auth.stop(); err != nil {
				logger.Error("credentials refresh", "error", err)
			}
		}()
	}
	var serverTLS *server.TLS
	var serverOptions []grpc.ServerOption
	if cfg.TLS != nil {
		tlsConfig := *cfg.TLS
		tlsConfig.Logger = logger
		if serverTLS, err = server.NewTLS(tlsConfig); err != nil {
			return err
		}
		serverOptions = append(serverOptions, serverTLS.ServerOption())
	}
	srv, err := server.New(store, server.Config{
		Logger:         logger,
		DefaultTimeout: cfg.RequestTimeout,
		MaxTimeout:     cfg.MaxRequestTimeout,
		Limits:         cfg.GRPC,
		RateLimits:     cfg.RateLimits,
		Metrics:        metrics,
		Auth:           auth.get(),
		ServerOptions:  serverOptions,
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
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return abandon(fmt.Errorf("listen: %w", err))
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
	logger.Info("ledgerd serving", "version", version, "addr", lis.Addr().String(), "http_addr", httpAddr,
		"tls", cfg.TLS != nil, "db_max_conns", cfg.DBMaxConns, "coalesce", !cfg.Ledger.Coalesce.Disabled)

	if cfg.PprofAddr != "" {
		stopProfiles, err := serveProfiles(cfg.PprofAddr, logger)
		if err != nil {
			_ = lis.Close()
			return abandon(err)
		}
		defer stopProfiles()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	httpServed := make(chan error, 1)
	if httpSrv != nil {
		go func() { httpServed <- httpSrv.Serve(httpLis) }()
	}
	var failure error
	select {
	case err := <-served: // only on a failure: Shutdown has not been called
		failure = fmt.Errorf("serve: %w", err)
		served <- nil // for the wait below
	case err := <-httpServed:
		failure = fmt.Errorf("serve HTTP: %w", err)
		httpServed <- http.ErrServerClosed
	case <-ctx.Done():
	}

	// Shutting down, in this order:
	//  1. Drain: the gRPC health service and /readyz turn NOT_SERVING so
	//     that load balancers stop sending, and waiting Reserves answer at
	//     once, on either port.
	//  2. The HTTP server stops accepting and waits for its in-flight
	//     requests. They are gateway calls into the gRPC server, which
	//     must still serve them: stopped first, it would fail them with
	//     UNAVAILABLE.
	//  3. The gRPC server stops gracefully: in-flight RPCs finish, new ones
	//     are refused.
	//  4. The gateway's connections close, then the sweeper, the listener
	//     and the pool (deferred).
	// One --shutdown-timeout bounds steps 2 and 3 together; what still runs
	// when it is over is cut off.
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

// listenHTTP binds the HTTP port (with TLS unless serverTLS is nil) and
// prepares its server, unless --http-addr is empty: then both are nil. The
// gateway calls the gRPC server in-process, so that it needs neither TLS
// nor a client certificate of its own.
func listenHTTP(ctx context.Context, cfg config, srv *server.Server, serverTLS *server.TLS, metrics *server.Metrics, logger *slog.Logger) (*http.Server, net.Listener, error) {
	if cfg.HTTPAddr == "" {
		return nil, nil, nil
	}
	handler, err := srv.HTTPHandler(ctx, server.HTTPConfig{
		Metrics: metrics,
		Logger:  logger,
		// A request carries its bytes fields in base64 in JSON: a third more.
		MaxRequestBytes: 2 * int64(cfg.maxMessageBytes()),
	})
	if err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen HTTP: %w", err)
	}
	if serverTLS != nil {
		lis = tls.NewListener(lis, serverTLS.HTTPConfig())
	}
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
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

// logSweep logs a sweeper pass that removed something or failed; idle
// passes stay quiet.
func logSweep(logger *slog.Logger, r ledger.SweepReport) {
	var purged int64
	for _, n := range r.PurgedEntries {
		purged += n
	}
	switch {
	case r.Err != nil:
		logger.Warn("sweep failed", "purged_entries", purged, "deleted_events", r.DeletedEvents, "error", r.Err)
	case purged > 0 || r.DeletedEvents > 0:
		logger.Info("swept", "purged_entries", purged, "deleted_events", r.DeletedEvents)
	}
}

// runningAuth is the Auth of a serving ledgerd and its refresh loop.
type runningAuth struct {
	auth    *server.Auth
	stopRun context.CancelFunc
	ran     chan error
}

func (r *runningAuth) get() *server.Auth {
	if r == nil {
		return nil
	}
	return r.auth
}

// stop ends the refresh loop and returns what it returned.
func (r *runningAuth) stop() error {
	r.stopRun()
	return <-r.ran
}

// startAuth loads the credentials and keeps them fresh, unless the server
// runs in development mode (--insecure-dev), which serves without
// authentication on loopback addresses only.
func startAuth(ctx context.Context, cfg config, store *ledger.Store, logger *slog.Logger) (*runningAuth, error) {
	if cfg.InsecureDev {
		logger.Warn("INSECURE DEVELOPMENT MODE: no authentication, every caller may do everything; loopback addresses only",
			"listen_addr", cfg.ListenAddr, "http_addr", cfg.HTTPAddr)
		return nil, nil
	}
	auth := server.NewAuth(store, server.AuthConfig{RefreshInterval: cfg.AuthRefreshInterval, Logger: logger})
	if err := auth.Load(ctx); err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	bindings, err := store.RoleBindings(ctx)
	if err != nil {
		return nil, err
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
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	r := &runningAuth{auth: auth, stopRun: stopRun, ran: make(chan error, 1)}
	go func() { r.ran <- auth.Run(runCtx) }()
	return r, nil
}

// bootstrap creates a platform-admin binding and token for the first
// operator, and prints the token.
func bootstrap(ctx context.Context, cfg config, stdout io.Writer) error {
	if cfg.Principal == "" {
		return errors.New("--principal is required: the name of the first platform admin")
	}
	logger := cfg.logger(stdout)
	// A one-off administrative command: it migrates, so its sessions are
	// the migrations' (no statement timeout).
	pool, err := openPool(ctx, cfg, forMigrations)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := ledger.Migrate(ctx, pool, logger); err != nil {
		return err
	}
	store, err := ledger.New(pool, cfg.Ledger)
	if err != nil {
		return err
	}
	token, secret, err := store.Bootstrap(ctx, cfg.Principal)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "platform-admin token for %s (id %s); it is shown only this once:\n%s\n", token.Principal, token.ID, secret)
	return nil
}
