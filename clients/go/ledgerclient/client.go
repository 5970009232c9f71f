package ledgerclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// Client talks to ledgerd. Its high-level helper is Do; the other methods
// are thin typed wrappers over the generated LedgerService client that add
// retries and typed errors. A Client is safe for concurrent use; make one
// per process and share it.
type Client struct {
	conn     *grpc.ClientConn         // owned by the Client; nil when made by NewFromConn
	cc       grpc.ClientConnInterface // the connection calls go through (also Admin's)
	ledger   ledgerv1.LedgerServiceClient
	policy   *callPolicy    // breaker, retry budget, attempt limit, counters
	fallback Fallback       // Do's default (WithFallback)
	failOpen *failOpenQueue // the fail-open results waiting to be recorded
}

// maxResponseBytes is the largest response New's connection accepts: the
// largest result ledgerd can store (--max-result-bytes-ceiling, 16 MiB by
// default) with room for the rest. WithDialOptions can change it.
const maxResponseBytes = 64 << 20

// Option configures New.
type Option func(*options)

type options struct {
	dialOptions []grpc.DialOption
	insecure    bool
	token       string
	// Tracing (see tracing.go): nil provider and propagator follow
	// OpenTelemetry's globals.
	tracerProvider trace.TracerProvider
	propagator     propagation.TextMapPropagator
	noTracing      bool

	// Resilience (see breaker.go, budget.go, fallback.go).
	breaker       *BreakerConfig // nil: off (WithoutCircuitBreaker)
	budget        *RetryBudget   // nil: off (WithoutRetryBudget)
	maxAttempts   int
	fallback      Fallback
	failOpenHooks FailOpenHooks
	failOpenQueue int
}

// defaultOptions are New's and NewFromConn's options before any Option.
func defaultOptions() options {
	return options{breaker: &BreakerConfig{}, budget: &RetryBudget{}, failOpenQueue: defaultFailOpenQueue}
}

// WithCircuitBreaker configures the Client's circuit breaker (see
// BreakerConfig; zero fields take their defaults). The breaker is on by
// default; WithoutCircuitBreaker turns it off. New fails for a field out of
// range, naming it.
func WithCircuitBreaker(cfg BreakerConfig) Option {
	return func(o *options) { o.breaker = &cfg }
}

// WithoutCircuitBreaker turns the circuit breaker off: every call is sent,
// and retried while ctx allows, however long ledgerd has not answered.
func WithoutCircuitBreaker() Option {
	return func(o *options) { o.breaker = nil }
}

// WithRetryBudget configures the Client's retry budget (see RetryBudget;
// zero fields take their defaults). It is on by default;
// WithoutRetryBudget turns it off. New fails for a field out of range.
func WithRetryBudget(budget RetryBudget) Option {
	return func(o *options) { o.budget = &budget }
}

// WithoutRetryBudget turns the retry budget off: every retryable failure is
// retried while ctx (and WithMaxAttempts) allows.
func WithoutRetryBudget() Option {
	return func(o *options) { o.budget = nil }
}

// WithMaxAttempts limits every call to n attempts, the first included; the
// last failure is returned once they are spent. Defaults to 0: no limit,
// the call is retried until its context ends (or the breaker opens, or the
// retry budget runs out). New fails for a negative n.
func WithMaxAttempts(n int) Option {
	return func(o *options) { o.maxAttempts = n }
}

// build checks the options and makes the Client's call policy and fail-open
// queue.
func (o *options) build(c *Client) error {
	if o.maxAttempts < 0 {
		return fmt.Errorf("WithMaxAttempts: the attempt limit must be at least 1 (or 0: none), got %d", o.maxAttempts)
	}
	if o.failOpenQueue < 1 {
		return fmt.Errorf("WithFailOpenQueue: the queue must hold at least 1 result, got %d", o.failOpenQueue)
	}
	c.policy = &callPolicy{maxAttempts: o.maxAttempts}
	if o.breaker != nil {
		if err := o.breaker.validate(); err != nil {
			return err
		}
		c.policy.breaker = newBreaker(*o.breaker, time.Now)
	}
	if o.budget != nil {
		if err := o.budget.validate(); err != nil {
			return err
		}
		c.policy.budget = newRetryBucket(*o.budget)
	}
	c.fallback = o.fallback
	c.failOpen = newFailOpenQueue(c, o.failOpenHooks, o.failOpenQueue)
	return nil
}

// WithTransportCredentials secures the connection with creds, for example
// credentials.NewTLS(tlsConfig).
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return WithDialOptions(grpc.WithTransportCredentials(creds))
}

// WithInsecure connects without transport security: plaintext, no server
// authentication. It is meant for development and tests against a local
// ledgerd; production clients use WithTransportCredentials.
func WithInsecure() Option {
	return func(o *options) {
		o.insecure = true
		o.dialOptions = append(o.dialOptions, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
}

// WithToken authenticates every call with an API token ("ldg_…", issued
// by `ledgerctl tokens create`), sent as "authorization: Bearer <token>".
// The token is only sent over TLS, unless WithInsecure says the connection
// is a development one.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// bearerToken is the per-RPC credential of WithToken.
type bearerToken struct {
	token      string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

// WithDialOptions passes opts to grpc.NewClient, after the client's own
// (there are none today), so that they can set anything gRPC allows:
// per-RPC credentials, interceptors, keepalive, a service config.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// New returns a Client for the ledgerd at target, a gRPC target such as
// "ledgerd.internal:7400" or "dns:///ledgerd.internal:7400", or several
// ledgerd replicas separated by commas ("10.0.0.1:7400,10.0.0.2:7400"; see
// NewMulti). It connects lazily (grpc.NewClient): the first call makes the
// connection, and New does not fail because the server is down.
//
// Calls are balanced round robin over every address the target resolves
// to (a DNS name may resolve to several), and a replica that is down or
// whose gRPC health says NOT_SERVING (ledgerd does while it drains) gets
// no calls until it serves again. A service config given through
// WithDialOptions or by the resolver replaces that policy.
//
// Every call goes through a circuit breaker and a retry budget, on by
// default (see WithCircuitBreaker and WithRetryBudget), and Do fails closed
// while the ledger cannot answer unless told otherwise (WithFallback).
//
// Transport credentials are required: pass WithTransportCredentials,
// WithInsecure (development only), or grpc.WithTransportCredentials through
// WithDialOptions. New fails without them, if target cannot be parsed, or
// for an option out of range. Close the Client when done.
//
// Every call is traced with OpenTelemetry's global tracer provider and
// propagator (a no-op until the program sets them), so that a pipeline's
// span is the parent of ledgerd's; see WithTracerProvider, WithPropagator
// and WithoutTracing. The calls carry the user agent "ledgerd-go/<Version>".
func New(target string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.token != "" {
		o.dialOptions = append(o.dialOptions, grpc.WithPerRPCCredentials(bearerToken{token: o.token, requireTLS: !o.insecure}))
	}
	dialTarget, targetOptions, err := resolveTarget(target)
	if err != nil {
		return nil, fmt.Errorf("ledgerclient: new client for %q: %w", target, err)
	}
	dialOptions := []grpc.DialOption{
		// Replays carry results of up to the server's result ceiling (16 MiB
		// by default); gRPC's client default would refuse those above 4 MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseBytes)),
		grpc.WithUserAgent(userAgent),
		grpc.WithDefaultServiceConfig(serviceConfig),
	}
	dialOptions = append(dialOptions, targetOptions...)
	if !o.noTracing {
		dialOptions = append(dialOptions, o.tracingOption())
	}
	dialOptions = append(dialOptions, o.dialOptions...)
	conn, err := grpc.NewClient(dialTarget, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("ledgerclient: new client for %q: %w", target, err)
	}
	c := &Client{conn: conn, cc: conn, ledger: ledgerv1.NewLedgerServiceClient(conn)}
	if err := o.build(c); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ledgerclient: %w", err)
	}
	return c, nil
}

// NewFromConn returns a Client that makes its calls over conn, a connection
// the caller made and owns: Close does not close it. Tracing, balancing and
// the user agent are conn's: add otelgrpc.NewClientHandler to its dial
// options to trace the calls. Of opts, the circuit breaker, retry budget,
// attempt limit and fallback options apply (the others configure a
// connection, which conn already is); NewFromConn panics for one out of
// range, as a programming error.
func NewFromConn(conn grpc.ClientConnInterface, opts ...Option) *Client {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	c := &Client{cc: conn, ledger: ledgerv1.NewLedgerServiceClient(conn)}
	if err := o.build(c); err != nil {
		panic("ledgerclient: NewFromConn: " + err.Error())
	}
	return c
}

// Close records what it can of the fail-open results still queued (for up
// to 10s; see Flush), stops the recorder, and closes the connection that
// New made. Calls in flight fail with codes.Canceled. It returns an error
// that says how many fail-open results it could not record. It does not
// close the connection of a Client made by NewFromConn.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeFlushTimeout)
	defer cancel()
	flushErr := c.failOpen.flush(ctx)
	c.failOpen.close()
	if c.conn == nil {
		return flushErr
	}
	return errors.Join(flushErr, c.conn.Close())
}

// Reserve asks for the lease of a key; see ledgerv1.ReserveResponse for its
// outcomes (ACQUIRED, COMPLETED, IN_PROGRESS, FAILED), which are answers,
// not errors. It fails with ErrInvalidArgument or ErrFingerprintMismatch.
// Like every method of Client, it retries while the server is unavailable,
// until ctx ends.
func (c *Client) Reserve(ctx context.Context, req *ledgerv1.ReserveRequest) (*ledgerv1.ReserveResponse, error) {
	response, err := call(ctx, c.policy, "reserve", c.ledger.Reserve, req)
	return response, prefixed(err)
}

// Heartbeat extends the lease held with req's fencing token, and stores
// req's checkpoint when it is set. It fails with ErrInvalidArgument or
// ErrLeaseLost.
func (c *Client) Heartbeat(ctx context.Context, req *ledgerv1.HeartbeatRequest) (*ledgerv1.HeartbeatResponse, error) {
	response, err := call(ctx, c.policy, "heartbeat", c.ledger.Heartbeat, req)
	return response, prefixed(err)
}

// Complete records the result of the work under req's fencing token. It
// fails with ErrInvalidArgument, ErrLeaseLost (someone took over: the result
// was not recorded) or ErrResultConflict.
func (c *Client) Complete(ctx context.Context, req *ledgerv1.CompleteRequest) (*ledgerv1.CompleteResponse, error) {
	response, err := call(ctx, c.policy, "complete", c.ledger.Complete, req)
	return response, prefixed(err)
}

// Fail records that the work failed: retryable (the key is released) or
// permanent (the key is FAILED). It fails with ErrInvalidArgument,
// ErrLeaseLost or ErrResultConflict.
func (c *Client) Fail(ctx context.Context, req *ledgerv1.FailRequest) (*ledgerv1.FailResponse, error) {
	response, err := call(ctx, c.policy, "fail", c.ledger.Fail, req)
	return response, prefixed(err)
}

// Release gives up the lease held with req's fencing token, so that the next
// Reserve acquires the key at once. It fails with ErrInvalidArgument or
// ErrLeaseLost.
func (c *Client) Release(ctx context.Context, req *ledgerv1.ReleaseRequest) (*ledgerv1.ReleaseResponse, error) {
	response, err := call(ctx, c.policy, "release", c.ledger.Release, req)
	return response, prefixed(err)
}

// Lookup returns the whole entry of a key. It fails with ErrInvalidArgument
// or ErrNotFound.
func (c *Client) Lookup(ctx context.Context, req *ledgerv1.LookupRequest) (*ledgerv1.LookupResponse, error) {
	response, err := call(ctx, c.policy, "lookup", c.ledger.Lookup, req)
	return response, prefixed(err)
}

// call makes one RPC with retries (see withRetries) and names the operation
// in its error.
func call[Req, Resp any](ctx context.Context, p *callPolicy, op string, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	response, err := withRetries(ctx, p, op, func() (Resp, error) { return rpc(ctx, req) })
	if err != nil {
		return response, fmt.Errorf("%s: %w", op, err)
	}
	return response, nil
}

// prefixed names the package in the errors of the exported methods.
func prefixed(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("ledgerclient: %w", err)
}
