package ledgerclient

import (
	"context"
	"fmt"

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
	conn   *grpc.ClientConn         // owned by the Client; nil when made by NewFromConn
	cc     grpc.ClientConnInterface // the connection calls go through (also Admin's)
	ledger ledgerv1.LedgerServiceClient
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
// "ledgerd.internal:7400" or "dns:///ledgerd.internal:7400". It connects
// lazily (grpc.NewClient): the first call makes the connection, and New
// does not fail because the server is down.
//
// Transport credentials are required: pass WithTransportCredentials,
// WithInsecure (development only), or grpc.WithTransportCredentials through
// WithDialOptions. New fails without them, or if target cannot be parsed.
// Close the Client when done.
//
// Every call is traced with OpenTelemetry's global tracer provider and
// propagator (a no-op until the program sets them), so that a pipeline's
// span is the parent of ledgerd's; see WithTracerProvider, WithPropagator
// and WithoutTracing.
func New(target string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.token != "" {
		o.dialOptions = append(o.dialOptions, grpc.WithPerRPCCredentials(bearerToken{token: o.token, requireTLS: !o.insecure}))
	}
	// Replays carry results of up to the server's result ceiling (16 MiB by
	// default); gRPC's client default would refuse those above 4 MiB.
	dialOptions := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseBytes))}
	if !o.noTracing {
		dialOptions = append(dialOptions, o.tracingOption())
	}
	dialOptions = append(dialOptions, o.dialOptions...)
	conn, err := grpc.NewClient(target, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("ledgerclient: new client for %q: %w", target, err)
	}
	return &Client{conn: conn, cc: conn, ledger: ledgerv1.NewLedgerServiceClient(conn)}, nil
}

// NewFromConn returns a Client that makes its calls over conn, a connection
// the caller made and owns: Close does not close it. Tracing is conn's: add
// otelgrpc.NewClientHandler to its dial options to trace the calls.
func NewFromConn(conn grpc.ClientConnInterface) *Client {
	return &Client{cc: conn, ledger: ledgerv1.NewLedgerServiceClient(conn)}
}

// Close closes the connection that New made. Calls in flight fail with
// codes.Canceled. Close does nothing for a Client made by NewFromConn.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Reserve asks for the lease of a key; see ledgerv1.ReserveResponse for its
// outcomes (ACQUIRED, COMPLETED, IN_PROGRESS, FAILED), which are answers,
// not errors. It fails with ErrInvalidArgument or ErrFingerprintMismatch.
// Like every method of Client, it retries while the server is unavailable,
// until ctx ends.
func (c *Client) Reserve(ctx context.Context, req *ledgerv1.ReserveRequest) (*ledgerv1.ReserveResponse, error) {
	response, err := call(ctx, "reserve", c.ledger.Reserve, req)
	return response, prefixed(err)
}

// Heartbeat extends the lease held with req's fencing token, and stores
// req's checkpoint when it is set. It fails with ErrInvalidArgument or
// ErrLeaseLost.
func (c *Client) Heartbeat(ctx context.Context, req *ledgerv1.HeartbeatRequest) (*ledgerv1.HeartbeatResponse, error) {
	response, err := call(ctx, "heartbeat", c.ledger.Heartbeat, req)
	return response, prefixed(err)
}

// Complete records the result of the work under req's fencing token. It
// fails with ErrInvalidArgument, ErrLeaseLost (someone took over: the result
// was not recorded) or ErrResultConflict.
func (c *Client) Complete(ctx context.Context, req *ledgerv1.CompleteRequest) (*ledgerv1.CompleteResponse, error) {
	response, err := call(ctx, "complete", c.ledger.Complete, req)
	return response, prefixed(err)
}

// Fail records that the work failed: retryable (the key is released) or
// permanent (the key is FAILED). It fails with ErrInvalidArgument,
// ErrLeaseLost or ErrResultConflict.
func (c *Client) Fail(ctx context.Context, req *ledgerv1.FailRequest) (*ledgerv1.FailResponse, error) {
	response, err := call(ctx, "fail", c.ledger.Fail, req)
	return response, prefixed(err)
}

// Release gives up the lease held with req's fencing token, so that the next
// Reserve acquires the key at once. It fails with ErrInvalidArgument or
// ErrLeaseLost.
func (c *Client) Release(ctx context.Context, req *ledgerv1.ReleaseRequest) (*ledgerv1.ReleaseResponse, error) {
	response, err := call(ctx, "release", c.ledger.Release, req)
	return response, prefixed(err)
}

// Lookup returns the whole entry of a key. It fails with ErrInvalidArgument
// or ErrNotFound.
func (c *Client) Lookup(ctx context.Context, req *ledgerv1.LookupRequest) (*ledgerv1.LookupResponse, error) {
	response, err := call(ctx, "lookup", c.ledger.Lookup, req)
	return response, prefixed(err)
}

// call makes one RPC with retries (see withRetries) and names the operation
// in its error.
func call[Req, Resp any](ctx context.Context, op string, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	response, err := withRetries(ctx, func() (Resp, error) { return rpc(ctx, req) })
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
