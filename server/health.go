package server

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// Health is one state, set in one place (servingState) and read by both
// the gRPC health service and /readyz, so that they always agree. A
// replica serves (SERVING, /readyz 200) when all of these hold:
//
//   - it has started: Start has prepared what needs the database (a server
//     made without Config.Starting starts at once);
//   - the database answered the last health check, a ping every
//     Config.HealthCheckInterval;
//   - it is not stopping: neither LameDuck nor Drain has been called. Once
//     stopping, it never serves again.

// healthServices are the services whose status the health service reports:
// the server as a whole ("") and each ledger service. They share one status.
var healthServices = []string{
	"",
	ledgerv1.LedgerService_ServiceDesc.ServiceName,
	ledgerv1.LedgerAdminService_ServiceDesc.ServiceName,
}

// The reasons /readyz gives when the replica does not serve.
const (
	reasonStarting      = "starting: waiting for the database"
	reasonStopping      = "shutting down"
	reasonDBUnreachable = "database unreachable"
)

// servingState decides whether the replica serves, and tells the health
// service whenever that changes.
type servingState struct {
	health *drainingHealth
	logger *slog.Logger

	// started is read on every RPC (see startGate), so it is atomic; it is
	// written under mu.
	started atomic.Bool

	mu        sync.Mutex
	stopping  bool   // LameDuck or Drain: never SERVING again
	dbProblem string // why the last health check failed; "" if it passed
	serving   bool   // the status the health service reports
}

func newServingState(h *drainingHealth, logger *slog.Logger, started bool) *servingState {
	s := &servingState{health: h, logger: logger}
	s.started.Store(started)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStatus(started)
	return s
}

// setStatus tells the health service, for every service, whether the
// replica serves. Called with mu held.
func (s *servingState) setStatus(serving bool) {
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		status = healthpb.HealthCheckResponse_SERVING
	}
	for _, service := range healthServices {
		s.health.SetServingStatus(service, status)
	}
	s.serving = serving
}

// update sets the health status from the state. Called with mu held.
func (s *servingState) update() {
	if s.stopping {
		return // the health service is shut down: NOT_SERVING for good
	}
	if serving := s.started.Load() && s.dbProblem == ""; serving != s.serving {
		s.setStatus(serving)
	}
}

// markStarted records that start-up is done: the database has just
// answered.
func (s *servingState) markStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started.Store(true)
	s.dbProblem = ""
	s.update()
}

// stop turns every service NOT_SERVING for good. Watch streams stay open
// (they are told NOT_SERVING); drainingHealth.drain ends them.
func (s *servingState) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	s.health.Shutdown() // later SetServingStatus calls are ignored
	s.serving = false
}

// observeDatabase records the outcome of a health check: problem is why it
// failed ("" if it passed) and err the ping's error. It logs when the
// database is lost or regained, not on every check, and does nothing
// before start-up is done (Start logs its own failures) or once stopping.
func (s *servingState) observeDatabase(problem string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || !s.started.Load() {
		return
	}
	switch was := s.dbProblem; {
	case was == "" && problem != "":
		s.logger.Warn("database health check failed: reporting NOT_SERVING", "reason", problem, "error", err)
	case was != "" && problem == "":
		s.logger.Info("database health check passed again: reporting SERVING")
	}
	s.dbProblem = problem
	s.update()
}

// notReadyReason returns why the replica does not serve, or "" if it does.
func (s *servingState) notReadyReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return reasonStopping
	case !s.started.Load():
		return reasonStarting
	default:
		return s.dbProblem
	}
}

// LameDuck turns the health status NOT_SERVING for good (the gRPC health
// service and /readyz) while calls go on being served as usual, so that
// load balancers stop routing to this replica before Drain and Shutdown
// refuse anything. Watch streams are told NOT_SERVING and stay open until
// Drain.
func (s *Server) LameDuck() { s.state.stop() }

// runHealthChecks pings the database every interval until ctx ends, and
// sets the serving state from the answers. Checks begin once start-up is
// done; until then Start is what reaches the database.
func (s *Server) runHealthChecks(ctx context.Context, interval, timeout time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if !s.state.started.Load() {
			continue
		}
		problem, err := s.checkDatabase(ctx, timeout)
		if ctx.Err() != nil {
			return // stopped mid-check: the failure is ours, not the database's
		}
		s.state.observeDatabase(problem, err)
	}
}

// checkDatabase pings the database and returns why it did not answer
// within timeout, with the ping's error, or "" and nil.
func (s *Server) checkDatabase(ctx context.Context, timeout time.Duration) (problem string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch err := s.store.Ping(ctx); {
	case err == nil:
		return "", nil
	case errors.Is(err, context.DeadlineExceeded):
		return "database did not answer within " + timeout.String(), err
	default:
		return reasonDBUnreachable, err
	}
}

// healthChecks runs runHealthChecks from the first Serve until Shutdown.
type healthChecks struct {
	mu      sync.Mutex
	stopped bool
	cancel  context.CancelFunc // nil until started
	done    chan struct{}
}

// start runs run in a goroutine, unless it runs already or stop was
// called.
func (c *healthChecks) start(run func(ctx context.Context)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		run(ctx)
	}()
}

// stop ends the checks and waits for them; they never start again.
func (c *healthChecks) stop() {
	c.mu.Lock()
	c.stopped = true
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Start-up retries: the first after startRetryMin, then twice as long each
// time up to startRetryMax (each ±20%, so that replicas started together
// do not retry in step); a failure is logged at most every
// startLogInterval, unless its level changes.
const (
	startRetryMin    = 100 * time.Millisecond
	startRetryMax    = 5 * time.Second
	startLogInterval = 5 * time.Second
)

// ErrStartRefused marks a start-up failure that retrying cannot fix, such
// as a database that the configuration must not serve: Start returns it at
// once instead of retrying.
var ErrStartRefused = errors.New("refusing to start")

// errStarting is the answer to the ledger's RPCs until start-up is done.
var errStarting = withDetails(codes.Unavailable, ReasonUnavailable,
	"ledgerd is starting and does not serve yet: it is waiting for its database; retry", nil)

// Start runs prepare, what must succeed before the ledger can serve
// (reaching the database, migrating it, loading the credentials), until it
// succeeds; then the health status turns SERVING (unless LameDuck or Drain
// came first) and the ledger's RPCs are let through. Until then, a server
// made with Config.Starting reports NOT_SERVING and answers the ledger's
// RPCs with UNAVAILABLE; the health service and reflection answer as
// usual.
//
// A failed prepare is run again after a backoff that grows from 100ms to
// 5s. Failures are logged at most every 5s: at WARN when the database is
// out of reach (ledger.ErrUnavailable, or a deadline inside prepare), which
// passes by itself; at ERROR otherwise (bad credentials, a database
// migrated by a newer ledgerd, pending migrations that this replica may not
// apply), which needs an operator, whom the retries let fix it without
// restarting ledgerd. prepare must be safe to run again after a failure.
//
// A failure that wraps ErrStartRefused is not retried: Start returns it at
// once, and the server never serves.
//
// Start returns nil once prepare has succeeded, or ctx's error if ctx ends
// first (the server then never serves).
func (s *Server) Start(ctx context.Context, prepare func(ctx context.Context) error) error {
	delay := startRetryMin
	var lastLog time.Time
	var lastLevel slog.Level
	for attempt := 1; ; attempt++ {
		err := prepare(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrStartRefused) {
			return err
		}
		if err == nil {
			s.state.markStarted()
			if attempt > 1 {
				s.logger.Info("start-up succeeded", "attempts", attempt)
			}
			return nil
		}
		wait := delay*4/5 + rand.N(delay*2/5+1)
		level := startFailureLevel(err)
		if attempt == 1 || level != lastLevel || time.Since(lastLog) >= startLogInterval {
			attrs := []any{"attempt", attempt, "retry_in", wait.Round(time.Millisecond), "error", err}
			if level == slog.LevelError {
				attrs = append(attrs, "hint", "this does not pass by itself: fix the database, its credentials or its schema; ledgerd keeps trying meanwhile")
			}
			s.logger.Log(ctx, level, "start-up failed: not serving yet, retrying", attrs...)
			lastLog, lastLevel = time.Now(), level
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		delay = min(2*delay, startRetryMax)
	}
}

// startFailureLevel is the level at which Start logs a failure: WARN for
// a database out of reach, which passes by itself, ERROR for what needs an
// operator.
func startFailureLevel(err error) slog.Level {
	if errors.Is(err, ledger.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return slog.LevelWarn
	}
	return slog.LevelError
}

// startGate answers the ledger's RPCs with UNAVAILABLE until start-up is
// done. The health service and reflection pass.
func (s *Server) startGate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !s.state.started.Load() && isLedgerMethod(info.FullMethod) {
		return nil, errStarting
	}
	return handler(ctx, req)
}

// isLedgerMethod reports whether a method (/service/method) is one of the
// ledger's own services'.
func isLedgerMethod(fullMethod string) bool {
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return service == ledgerv1.LedgerService_ServiceDesc.ServiceName ||
		service == ledgerv1.LedgerAdminService_ServiceDesc.ServiceName
}

// drainingHealth is grpc's standard health service, except that its Watch
// streams end when the server shuts down, once they have told the watcher
// NOT_SERVING. Without this, any client with health checking enabled keeps
// a Watch stream open, and GracefulStop waits for it until the shutdown
// timeout cuts every RPC off.
type drainingHealth struct {
	*health.Server
	draining     chan struct{}
	drainingOnce sync.Once
}

func newDrainingHealth() *drainingHealth {
	return &drainingHealth{Server: health.NewServer(), draining: make(chan struct{})}
}

// drain sets every service NOT_SERVING and ends the Watch streams.
func (h *drainingHealth) drain() {
	h.Shutdown()
	h.drainingOnce.Do(func() { close(h.draining) })
}

// notServingNoticeTimeout bounds how long a Watch stream may take to send
// its NOT_SERVING notice once draining has begun.
const notServingNoticeTimeout = time.Second

// Watch serves health.Server's Watch until the watcher leaves or the server
// drains.
func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	watch := &watchStream{Health_WatchServer: stream, ctx: ctx, sent: make(chan struct{})}
	go func() {
		select {
		case <-h.draining:
			watch.awaitNotServingNotice(notServingNoticeTimeout)
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(req, watch)
}

// watchStream is a Watch stream with a context that drain can cancel, and
// that notes the last status it sent: the watcher may have been told
// NOT_SERVING (the database lost, a lame duck) and SERVING again before
// the server drains.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context

	mu         sync.Mutex
	notServing bool          // the last status sent was not SERVING
	sent       chan struct{} // closed, and replaced, by every Send
}

func (s *watchStream) Context() context.Context { return s.ctx }

func (s *watchStream) Send(res *healthpb.HealthCheckResponse) error {
	err := s.Health_WatchServer.Send(res)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notServing = res.GetStatus() != healthpb.HealthCheckResponse_SERVING
	close(s.sent)
	s.sent = make(chan struct{})
	return err
}

// awaitNotServingNotice returns once the last status sent is not SERVING,
// the stream has ended, or timeout has passed.
func (s *watchStream) awaitNotServingNotice(timeout time.Duration) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		told, next := s.notServing, s.sent
		s.mu.Unlock()
		if told {
			return
		}
		select {
		case <-next:
		case <-deadline.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}
