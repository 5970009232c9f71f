package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	ledgergw "github.com/ledgerd/ledgerd/internal/gengateway/ledger/v1"
)

// HTTPConfig configures the handler of ledgerd's HTTP port (see
// Server.HTTPHandler). Zero fields take their defaults.
type HTTPConfig struct {
	// GRPCAddr is the address of this process's gRPC listener, which the
	// HTTP/JSON gateway calls so that every request runs through the same
	// interceptors as a gRPC one. An unspecified host (0.0.0.0, ::, or
	// none) is dialed on loopback. Empty (the default): the gateway calls
	// the gRPC server over an in-process connection instead, without TLS
	// and reachable from nowhere else, which works whatever the gRPC port's
	// TLS (see TLS.ServerOption) and client certificate requirements.
	GRPCAddr string
	// DialOptions are added to the gateway's dial options after the
	// default, plaintext transport credentials, which they may replace.
	DialOptions []grpc.DialOption
	// Metrics are served on /metrics. Defaults to nil: no /metrics (serve
	// Metrics.Handler on an internal listener instead, so that the public
	// port does not name the tenants' namespaces).
	Metrics *Metrics
	// Logger receives the errors of /metrics. Defaults to slog.Default().
	Logger *slog.Logger
	// MaxRequestBytes bounds an HTTP/JSON request body: a larger one is
	// refused with 413 before it is read. Defaults to the largest body
	// whose request can be forwarded, HTTPRequestBytes of the gRPC request
	// limit; it may not be larger, since a larger body would be read in
	// vain.
	MaxRequestBytes int64
	// MaxHeaderBytes bounds the headers of a gateway request, counted as
	// gRPC counts the metadata they become (name, value and 32 bytes per
	// field): larger ones are refused with 431 before the body is read.
	// Defaults to 64 KiB; it may not be larger than the gRPC server's
	// Limits.MaxHeaderListBytes less 4 KiB, which the gateway's own
	// metadata needs. Set http.Server.MaxHeaderBytes to the same number, so
	// that net/http refuses larger headers before reading them whole.
	MaxHeaderBytes int
	// BodyReadTimeout bounds the reading of a gateway request's body, from
	// the moment its headers are read and its caller authenticated: a body
	// that has not arrived by then is answered with 408 and its connection
	// closed. Defaults to 1m: a body of the default maximum size needs a
	// link of about 3.2 Mbit/s. (http.Server.ReadHeaderTimeout bounds the
	// headers.)
	BodyReadTimeout time.Duration
	// TrustedProxies are the networks of the proxies (load balancers) in
	// front of the HTTP port. The source address of a request that comes
	// from one of them is taken from its X-Forwarded-For header: the
	// rightmost address that is not itself a trusted proxy's. Defaults to
	// none: X-Forwarded-For is ignored, and the source of a request is the
	// address it came from.
	TrustedProxies []netip.Prefix
	// TLS is what the HTTP port serves (its listener wrapped with
	// TLS.HTTPConfig): the gateway names the principal of a caller's
	// client certificate by its rules, as the gRPC port does. Defaults to
	// nil: a client certificate is not a principal on the HTTP port.
	TLS *TLS
}

// HTTPRequestBytes is the largest HTTP/JSON body worth reading for a gRPC
// request limit of grpcLimit bytes: the bytes fields of the request, in
// base64, take 4/3 of their size in protobuf, and 64 KiB are left for
// JSON's field names and punctuation. (With the default limit of 17 MiB:
// 22.7 MiB.)
func HTTPRequestBytes(grpcLimit int) int64 {
	return (int64(grpcLimit)*4+2)/3 + 64<<10
}

// gatewayMetadataBytes is the room, in the gRPC server's header limit,
// that the gateway's own metadata needs on top of the headers it forwards.
const gatewayMetadataBytes = 4 << 10

func (c HTTPConfig) withDefaults(limits Limits) (HTTPConfig, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	largest := HTTPRequestBytes(limits.MaxRecvMsgBytes)
	setDefault(&c.MaxRequestBytes, largest)
	setDefault(&c.MaxHeaderBytes, 64<<10)
	setDefault(&c.BodyReadTimeout, time.Minute)
	switch {
	case c.MaxRequestBytes < 0 || c.MaxRequestBytes > largest:
		return c, fmt.Errorf("HTTP: MaxRequestBytes must be between 1 and %d (the gRPC request limit in JSON), got %d", largest, c.MaxRequestBytes)
	case c.MaxHeaderBytes < 0 || c.MaxHeaderBytes > int(limits.MaxHeaderListBytes)-gatewayMetadataBytes:
		return c, fmt.Errorf("HTTP: MaxHeaderBytes must be between 1 and %d (the gRPC header limit less 4 KiB), got %d", int(limits.MaxHeaderListBytes)-gatewayMetadataBytes, c.MaxHeaderBytes)
	case c.BodyReadTimeout < 0:
		return c, fmt.Errorf("HTTP: BodyReadTimeout must not be negative, got %s", c.BodyReadTimeout)
	}
	return c, nil
}

// HTTPHandler returns the handler of ledgerd's HTTP port:
//
//	POST /ledger.v1.LedgerService/<Method>        HTTP/JSON gateway: the request
//	POST /ledger.v1.LedgerAdminService/<Method>   message as JSON in, the response out
//	GET  /metrics                                 Prometheus metrics (with cfg.Metrics)
//	GET  /healthz                                 200 while the process is up
//	GET  /readyz                                  200 while the gRPC health service says SERVING
//
// Before the gateway reads a body, the handler refuses oversized headers
// (431), a body that is not application/json (415), a caller without
// valid credentials when the server has Auth (401), and a body larger than
// cfg.MaxRequestBytes (413); the body must arrive within
// cfg.BodyReadTimeout (408). The gateway calls the gRPC server
// (in-process, or at cfg.GRPCAddr), so its requests get the same
// interceptors (deadlines, logs, metrics, authorization).
// It forwards the caller's authorization header; over the in-process
// connection, it also forwards the principal of the caller's verified
// client certificate when the HTTP port serves TLS (see TLS.HTTPConfig). Its
// errors are the gRPC status as JSON ({"code", "message", "details"}, with
// the ErrorInfo reason in details), with the HTTP status that google.rpc.Code
// documents for the code (LEASE_LOST, ABORTED: 409; INVALID_ARGUMENT and
// FAILED_PRECONDITION: 400; NOT_FOUND: 404; UNAVAILABLE: 503...). Every
// answer of an RPC route carries the call's X-Request-Id (see
// httpRequestID). The gateway's connections close when ctx ends: cancel it after the gRPC
// server has stopped.
func (s *Server) HTTPHandler(ctx context.Context, cfg HTTPConfig) (http.Handler, error) {
	cfg, err := cfg.withDefaults(s.limits)
	if err != nil {
		return nil, err
	}
	var endpoint string
	var endpointOptions []grpc.DialOption
	if cfg.GRPCAddr == "" {
		lis := newInProcessListener()
		// Serve returns when the server stops (which closes lis) or when
		// the gateway's connections are closed.
		go func() { _ = s.grpc.Serve(lis) }()
		context.AfterFunc(ctx, func() { _ = lis.Close() })
		endpoint = "passthrough:///" + lis.Addr().String()
		endpointOptions = []grpc.DialOption{grpc.WithContextDialer(lis.dial)}
	} else {
		if endpoint, err = loopback(cfg.GRPCAddr); err != nil {
			return nil, err
		}
	}
	// Reject unknown fields: a misspelt "fencingToken" must not be
	// silently dropped. Answers include unset fields ("takeover": false).
	marshaler := &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}
	forward := forwardCaller(cfg.TLS, cfg.TrustedProxies)
	gateway := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithErrorHandler(gatewayError(cfg.MaxRequestBytes)),
		runtime.WithRoutingErrorHandler(routingError),
		runtime.WithIncomingHeaderMatcher(forwardedHeader),
		runtime.WithOutgoingHeaderMatcher(returnedHeader),
		runtime.WithMetadata(forward),
	)
	dialOptions := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The gateway's calls may be as large as the server allows (a gRPC
		// client's own limit on what it receives is 4 MiB).
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(s.limits.MaxRecvMsgBytes),
			grpc.MaxCallRecvMsgSize(s.limits.MaxSendMsgBytes)),
	}, append(endpointOptions, cfg.DialOptions...)...)
	if err := ledgergw.RegisterLedgerServiceHandlerFromEndpoint(ctx, gateway, endpoint, dialOptions); err != nil {
		return nil, fmt.Errorf("HTTP gateway: %w", err)
	}
	if err := ledgergw.RegisterLedgerAdminServiceHandlerFromEndpoint(ctx, gateway, endpoint, dialOptions); err != nil {
		return nil, fmt.Errorf("HTTP gateway: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("/", httpRequestID(&rpcGuard{next: gateway, mux: gateway, marshal: marshaler, auth: s.auth, cfg: cfg, forward: forward}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, probeAnswer{Status: "ok"})
	})
	mux.Handle("GET /readyz", readiness{state: s.state})
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics.Handler(cfg.Logger))
	}
	return mux, nil
}

// forwardedHeader is the gateway's default choice of the headers that
// become metadata, except that a caller can never set the keys in which
// the gateway forwards a client certificate's principal (or refusal) and
// credential id, and the caller's address, and that the authorization
// header, which the gateway forwards as "authorization" in any case, is not
// forwarded a second time (as grpcgateway-authorization): twice, a large
// header could exceed the gRPC server's header limit that it fits once.
//
// The request id (X-Request-Id, see httpRequestID) and the W3C trace
// context (traceparent, tracestate, baggage) are forwarded under their own
// names, so that the gRPC call has the HTTP request's id and its span is a
// child of the HTTP caller's; under no other name (Grpc-Metadata-…).
func forwardedHeader(header string) (string, bool) {
	switch {
	case strings.EqualFold(header, "Authorization"):
		return "", false
	case strings.EqualFold(header, "X-Request-ID"):
		return RequestIDKey, true
	case strings.EqualFold(header, "Traceparent"), strings.EqualFold(header, "Tracestate"), strings.EqualFold(header, "Baggage"):
		return strings.ToLower(header), true
	}
	key, ok := runtime.DefaultHeaderMatcher(header)
	for _, reserved := range []string{certificatePrincipalKey, certificateRefusalKey, certificateCredentialKey, sourceKey,
		RequestIDKey, "traceparent", "tracestate", "baggage"} {
		if strings.EqualFold(key, reserved) {
			return "", false
		}
	}
	return key, ok
}

// returnedHeader is the gateway's default choice of the gRPC response
// headers that become HTTP headers (Grpc-Metadata-<key>), but for the
// request id, which httpRequestID has set as X-Request-Id already.
func returnedHeader(key string) (string, bool) {
	if key == RequestIDKey {
		return "", false
	}
	return runtime.MetadataHeaderPrefix + key, true
}

// forwardCaller returns what passes on the HTTP caller's source address
// (see httpSource) and the principal of an HTTPS caller's verified client
// certificate, named by the rules of certs (the gRPC port's), with its
// credential id, or why it is not a principal, which Auth refuses.
func forwardCaller(certs *TLS, trustedProxies []netip.Prefix) func(context.Context, *http.Request) metadata.MD {
	return func(_ context.Context, r *http.Request) metadata.MD {
		md := metadata.Pairs(sourceKey, httpSource(r, trustedProxies))
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			return md
		}
		if certs == nil {
			md.Set(certificateRefusalKey, "client certificates are not principals on this port")
			return md
		}
		principal, err := certs.rules.principalOf(r.TLS.VerifiedChains)
		if err != nil {
			md.Set(certificateRefusalKey, status.Convert(err).Message())
			return md
		}
		md.Set(certificatePrincipalKey, principal)
		md.Set(certificateCredentialKey, certificateCredential(r.TLS.VerifiedChains[0][0]))
		return md
	}
}

// Drain begins a graceful shutdown without stopping anything: health (the
// gRPC health service and /readyz) turns NOT_SERVING for good so that load
// balancers stop sending, its Watch streams end, and waiting Reserves
// answer at once. Shutdown does the same first; call Drain before shutting
// the HTTP port down, because its in-flight requests go through the gRPC
// server, which must keep serving until they finish (see cmd/ledgerd).
func (s *Server) Drain() {
	s.state.stop()
	s.health.drain()
	s.store.EndWaits()
}

// loopback returns the address to dial for a listener's address: its own,
// or loopback if the listener's host is unspecified.
func loopback(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("HTTP gateway: gRPC address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// gatewayError returns the gateway's error handler: it writes a gRPC
// status as the gateway does by default, after giving an ErrorInfo to the
// statuses that the gateway itself makes (a body that is not valid JSON,
// the gRPC server out of reach), so that every answer carries a reason to
// branch on. A body that could not be read because it was larger than
// maxRequestBytes, or too slow, is answered with 413 or 408.
func gatewayError(maxRequestBytes int64) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, marshaler runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		if failure := bodyFailure(r, maxRequestBytes); failure != nil {
			w.Header().Set("Connection", "close") // what remains of the body is not read
			err = failure
		}
		runtime.DefaultHTTPErrorHandler(ctx, mux, marshaler, w, r, withReason(err))
	}
}

// gatewayReasons are the reasons given to gateway-made statuses, by code.
var gatewayReasons = map[codes.Code]string{
	codes.InvalidArgument:  ReasonInvalidArgument,
	codes.Unavailable:      ReasonUnavailable,
	codes.DeadlineExceeded: ReasonDeadlineExceeded,
	codes.Canceled:         ReasonCanceled,
	codes.Internal:         ReasonInternal,
}

func withReason(err error) error {
	st := status.Convert(err)
	reason, ok := gatewayReasons[st.Code()]
	if !ok || reasonOf(err) != "" {
		return err
	}
	withInfo, detailErr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain})
	if detailErr != nil {
		return err
	}
	return withInfo.Err()
}

// routingError answers a request for no route (404) or with the wrong
// method (405: every RPC is a POST) with a status body, like other errors.
func routingError(ctx context.Context, mux *runtime.ServeMux, marshaler runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	var err error
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		err = status.Error(codes.Unimplemented, "method not allowed: call RPCs with POST and a JSON body")
	case http.StatusNotFound:
		err = status.Errorf(codes.NotFound, "no such route: %s (RPCs are at /ledger.v1.LedgerService/<Method>)", r.URL.Path)
	default:
		err = status.Error(codes.InvalidArgument, http.StatusText(httpStatus))
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, marshaler, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: err})
}

// probeAnswer is the body of /healthz and /readyz.
type probeAnswer struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// readiness answers /readyz from the state that sets the gRPC health
// status, so that both always agree: 200 while the server serves (it has
// started, has not begun to stop, and the database passed its last health
// check), 503 with the reason otherwise. It does not touch the database:
// the health checks do (see Config.HealthCheckInterval), and log the
// changes.
type readiness struct {
	state *servingState
}

func (h readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if reason := h.state.notReadyReason(); reason != "" {
		writeJSON(w, http.StatusServiceUnavailable, probeAnswer{Status: "unavailable", Reason: reason})
		return
	}
	writeJSON(w, http.StatusOK, probeAnswer{Status: "ready"})
}
