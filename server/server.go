// Package server is ledgerd's gRPC adapter: it turns LedgerService requests
// into ledger.Store calls and ledger errors into gRPC statuses (toStatus),
// and assembles the grpc.Server with its interceptors, the health service
// and server reflection. It knows gRPC; the ledger package knows Postgres.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// Config configures a Server. Zero fields take their defaults.
type Config struct {
	// Logger receives the request log and errors. Defaults to slog.Default().
	Logger *slog.Logger
	// DefaultTimeout bounds a request that arrives without a deadline.
	// Defaults to 10s.
	DefaultTimeout time.Duration
	// MaxTimeout caps every request's deadline, however long the client
	// asked for. Defaults to 60s.
	MaxTimeout time.Duration
	// Limits bound message sizes, calls per connection, keepalive and
	// connection lifetimes (see Limits for each default).
	Limits Limits
	// ServerOptions are passed to grpc.NewServer after ledgerd's own (for
	// example credentials); they override ledgerd's where they overlap.
	ServerOptions []grpc.ServerOption
	// Metrics records every RPC and its ledger outcome (see NewMetrics).
	// Defaults to nil: nothing is recorded.
	Metrics *Metrics
	// Auth authenticates and authorizes every call (see NewAuth). Nil
	// serves without authentication: every call is allowed and recorded
	// as "anonymous", except the token and role RPCs, which are
	// PERMISSION_DENIED (a credential made anonymously would work on every
	// ledgerd that shares the database) — for development and tests only.
	Auth *Auth
	// RateLimits bound the requests of each principal and namespace. The
	// zero value is unlimited.
	RateLimits RateLimits
	// MaxWaitingReservesPerPrincipal bounds the Reserves of one principal
	// that wait for a key's holder (wait_timeout) on this replica at once;
	// a Reserve beyond it answers without waiting, as with wait_timeout 0.
	// Defaults to DefaultMaxWaitingReservesPerPrincipal; negative: no cap.
	MaxWaitingReservesPerPrincipal int
	// Starting makes the server begin NOT_SERVING, answering the ledger's
	// RPCs with UNAVAILABLE, until Start has succeeded: for a process that
	// binds its ports before it can reach its database. Defaults to false:
	// the server serves from the start.
	Starting bool
	// HealthCheckInterval is how often the database is pinged, once the
	// server has started, to set the health status (the gRPC health
	// service and /readyz): NOT_SERVING while the ping fails, SERVING again
	// once it passes. Defaults to 1s.
	HealthCheckInterval time.Duration
	// HealthCheckTimeout bounds each ping: a slower answer is a failure.
	// The ping takes a connection from the store's pool, so a pool that
	// cannot lend one within it fails too. Defaults to 2s.
	HealthCheckTimeout time.Duration
	// TracerProvider makes a span of every RPC (but health checks), a
	// child of the caller's span when the call carries W3C trace context
	// (see Propagator). Give the Store's pools the same provider (see
	// ledger.WithTracerProvider) for a span of every statement. Defaults
	// to nil: nothing is traced, and no tracing code runs.
	TracerProvider trace.TracerProvider

	// rateLimiter enforces RateLimits; New makes it, so that the Server
	// can replace its limits (see Server.SetRateLimits).
	rateLimiter *rateLimiter
	// activity counts each namespace's recent calls for GetNamespace; New
	// makes it.
	activity *activity
}

// limiter returns the rate limiter New made, or a new one over RateLimits.
func (c Config) limiter() *rateLimiter {
	if c.rateLimiter != nil {
		return c.rateLimiter
	}
	return newRateLimiter(c.RateLimits)
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 10 * time.Second
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = time.Minute
	}
	switch {
	case c.MaxWaitingReservesPerPrincipal == 0:
		c.MaxWaitingReservesPerPrincipal = DefaultMaxWaitingReservesPerPrincipal
	case c.MaxWaitingReservesPerPrincipal < 0:
		c.MaxWaitingReservesPerPrincipal = 0 // no cap (waitSlots)
	}
	if c.HealthCheckInterval == 0 {
		c.HealthCheckInterval = time.Second
	}
	if c.HealthCheckTimeout == 0 {
		c.HealthCheckTimeout = 2 * time.Second
	}
	return c
}

// Server is a ledgerd gRPC server: LedgerService, LedgerAdminService, the
// standard health service and server reflection.
type Server struct {
	grpc   *grpc.Server
	limits Limits // with defaults
	health *drainingHealth
	state  *servingState // what health reports
	// requestWaits bound the calls waiting for their request message.
	requestWaits *requestWaits
	checks       healthChecks // the database health checks, from Serve to Shutdown
	store        *ledger.Store
	auth         *Auth // nil: no authentication
	logger       *slog.Logger
	rateLimiter  *rateLimiter

	healthCheckInterval, healthCheckTimeout time.Duration
}

// New assembles a Server over store. It fails if the configuration is
// invalid. It does not touch the database.
func New(store *ledger.Store, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.DefaultTimeout < 0 || cfg.MaxTimeout < cfg.DefaultTimeout {
		return nil, fmt.Errorf("server config: need 0 < DefaultTimeout (%s) <= MaxTimeout (%s)", cfg.DefaultTimeout, cfg.MaxTimeout)
	}
	if cfg.HealthCheckInterval < 0 || cfg.HealthCheckTimeout < 0 {
		return nil, fmt.Errorf("server config: HealthCheckInterval (%s) and HealthCheckTimeout (%s) must not be negative", cfg.HealthCheckInterval, cfg.HealthCheckTimeout)
	}
	limits := cfg.Limits.withDefaults(store.Limits(), cfg.MaxTimeout)
	if err := limits.validate(); err != nil {
		return nil, err
	}
	cfg.rateLimiter = newRateLimiter(cfg.RateLimits)
	cfg.activity = newActivity(time.Now)
	s := &Server{
		limits: limits,
		health: newDrainingHealth(),
		store:  store,
		auth:   cfg.Auth,
		logger: cfg.Logger,

		healthCheckInterval: cfg.HealthCheckInterval,
		healthCheckTimeout:  cfg.HealthCheckTimeout,
	}
	s.rateLimiter = cfg.rateLimiter
	s.state = newServingState(s.health, cfg.Logger, !cfg.Starting)
	s.requestWaits = newRequestWaits(limits, cfg.Auth != nil)
	options := append(limits.serverOptions(),
		// Connections from the HTTP gateway's in-process listener are marked
		// as such, so that the caller's address it forwards is believed
		// (see callSource); TLS.ServerOption, in cfg.ServerOptions, replaces
		// this with TLS on every other connection.
		grpc.Creds(gatewayOrTLS{TransportCredentials: insecure.NewCredentials()}),
		// Before a stream exists: credential-less calls are refused, and the
		// wait for the request message is bounded (see requestWaits). The
		// interceptors that end the wait are outermost.
		grpc.InTapHandle(s.requestWaits.tap),
		grpc.ChainUnaryInterceptor(s.requestWaits.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.requestWaits.streamInterceptor),
		// A request protobuf refuses is INVALID_ARGUMENT, not INTERNAL
		// (see codec.go).
		grpc.ForceServerCodecV2(newLenientCodec()),
		grpc.ChainUnaryInterceptor(unaryInterceptors(cfg)...),
		// Innermost, so that the calls it refuses while starting are
		// counted and logged like any other.
		grpc.ChainUnaryInterceptor(s.startGate),
		grpc.ChainStreamInterceptor(rejectUndecodableStream(cfg.Logger)),
	)
	if cfg.Metrics != nil {
		options = append(options, cfg.Metrics.serverOptions()...)
	}
	if cfg.TracerProvider != nil {
		options = append(options, tracingOption(cfg.TracerProvider))
	}
	if cfg.Auth != nil {
		options = append(options, grpc.ChainStreamInterceptor(cfg.Auth.StreamInterceptor()))
	}
	options = append(options, cfg.ServerOptions...)
	s.grpc = grpc.NewServer(options...)
	ledgerv1.RegisterLedgerServiceServer(s.grpc, &service{store: store, logger: cfg.Logger, maxResponseBytes: limits.MaxSendMsgBytes,
		waits: newWaitSlots(cfg.MaxWaitingReservesPerPrincipal), metrics: cfg.Metrics})
	ledgerv1.RegisterLedgerAdminServiceServer(s.grpc, &adminService{store: store, auth: cfg.Auth, logger: cfg.Logger, activity: cfg.activity})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	if cfg.Metrics != nil {
		cfg.Metrics.rpcs.InitializeMetrics(s.grpc) // after every service is registered
		cfg.Metrics.watchReadiness(s.state)
	}
	return s, nil
}

// SetRateLimits replaces the rate limits while the server serves, on both
// ports: each principal's and namespace's bucket is kept with the tokens it
// holds, and refills at the new rate from now on (so a reload grants no
// fresh burst). Zero rates make the limits unlimited.
func (s *Server) SetRateLimits(limits RateLimits) {
	s.rateLimiter.setLimits(limits, time.Now())
}

// Serve accepts connections on lis until Shutdown. It returns nil after a
// Shutdown. The first Serve also begins the database health checks (see
// Config.HealthCheckInterval), which Shutdown ends.
func (s *Server) Serve(lis net.Listener) error {
	s.checks.start(func(ctx context.Context) {
		s.runHealthChecks(ctx, s.healthCheckInterval, s.healthCheckTimeout)
	})
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Shutdown stops the server gracefully: health turns NOT_SERVING so that
// load balancers stop sending, waiting Reserves answer at once, in-flight
// RPCs finish, and new ones are refused. If ctx ends first, the remaining
// RPCs are cut off.
func (s *Server) Shutdown(ctx context.Context) {
	s.Drain() // every service NOT_SERVING, Watch streams end, waits end
	s.checks.stop()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.logger.Warn("graceful stop timed out; cutting remaining RPCs off")
		s.grpc.Stop()
		<-stopped
	}
}
