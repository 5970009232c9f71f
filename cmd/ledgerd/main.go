// Command ledgerd is the idempotency ledger server.
//
//	ledgerd serve     apply pending migrations, then serve gRPC
//	ledgerd migrate   apply pending migrations and exit
//	ledgerd version   print the version
//
// Every flag has an environment variable fallback, LEDGER_ followed by the
// flag name in upper case with '-' as '_' (e.g. --database-url and
// LEDGER_DATABASE_URL); `ledgerd serve --help` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
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
  ledgerd migrate [flags]   apply pending migrations and exit
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

func openPool(ctx context.Context, cfg config) (*pgxpool.Pool, error) {
	poolConfig, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		// The parse error may quote the URL, password included: do not print it.
		return nil, errors.New("--database-url is not a valid PostgreSQL URL or DSN")
	}
	poolConfig.MaxConns = cfg.DBMaxConns
	if _, ok := poolConfig.ConnConfig.RuntimeParams["application_name"]; !ok {
		poolConfig.ConnConfig.RuntimeParams["application_name"] = "ledgerd"
	}
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

func migrate(ctx context.Context, cfg config, stdout io.Writer) error {
	logger := cfg.logger(stdout)
	pool, err := openPool(ctx, cfg)
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

func serve(ctx context.Context, cfg config, stdout io.Writer) error {
	logger := cfg.logger(stdout)
	pool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close() // last: after the server has drained

	if cfg.NoMigrate {
		if err := ledger.CheckSchema(ctx, pool); err != nil {
			return err
		}
	} else if applied, err := ledger.Migrate(ctx, pool, logger); err != nil {
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
	srv, err := server.New(store, server.Config{
		Logger:         logger,
		DefaultTimeout: cfg.RequestTimeout,
		MaxTimeout:     cfg.MaxRequestTimeout,
		ServerOptions:  []grpc.ServerOption{grpc.MaxRecvMsgSize(cfg.maxMessageBytes())},
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("ledgerd serving", "version", version, "addr", lis.Addr().String(),
		"db_max_conns", cfg.DBMaxConns)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout)
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	srv.Shutdown(drainCtx)
	if err := <-served; err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}
