package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
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
	// Metrics are served on /metrics. Defaults to nil: no /metrics.
	Metrics *Metrics
	// Logger receives the errors of /metrics. Defaults to slog.Default().
	Logger *slog.Logger
	// MaxRequestBytes bounds an HTTP/JSON request body; JSON carries bytes
	// fields in base64, a third larger than in gRPC. Defaults to 8 MiB.
	MaxRequestBytes int64
}

func (c HTTPConfig) withDefaults() HTTPConfig {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 8 << 20
	}
	return c
}

// HTTPHandler returns the handler of ledgerd's HTTP port:
//
//	POST /ledger.v1.LedgerService/<Method>        HTTP/JSON gateway: the request
//	POST /ledger.v1.LedgerAdminService/<Method>   message as JSON in, the response out
//	GET  /metrics                                 Prometheus metrics (with cfg.Metrics)
//	GET  /healthz                                 200 while the process is up
//	GET  /readyz                                  200 while the gRPC health service says SERVING
//
// The gateway calls the gRPC server (in-process, or at cfg.GRPCAddr), so
// its requests get the same interceptors (deadlines, logs, metrics, auth).
// It forwards the caller's authorization header; over the in-process
// connection, it also forwards the principal of the caller's verified
// client certificate when the HTTP port serves TLS (see TLS.HTTPConfig). Its
// errors are the gRPC status as JSON ({"code", "message", "details"}, with
// the ErrorInfo reason in details), with the HTTP status that google.rpc.Code
// documents for the code (LEASE_LOST, ABORTED: 409; INVALID_ARGUMENT and
// FAILED_PRECONDITION: 400; NOT_FOUND: 404; UNAVAILABLE: 503...). The
// gateway's connections close when ctx ends: cancel it after the gRPC
// server has stopped.
func (s *Server) HTTPHandler(ctx context.Context, cfg HTTPConfig) (http.Handler, error) {
	cfg = cfg.withDefaults()
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
		var err error
		if endpoint, err = loopback(cfg.GRPCAddr); err != nil {
			return nil, err
		}
	}
	gateway := runtime.NewServeMux(
		// Reject unknown fields: a misspelt "fencingToken" must not be
		// silently dropped. Answers include unset fields ("takeover": false).
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
		runtime.WithErrorHandler(gatewayError),
		runtime.WithRoutingErrorHandler(routingError),
		runtime.WithIncomingHeaderMatcher(forwardedHeader),
		runtime.WithMetadata(forwardCaller),
	)
	dialOptions := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The gateway's calls may be as large as the server allows (a gRPC
		// client's own limit on what it receives is 4 MiB).
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(s.limits.MaxRecvMsgBytes),
			grpc.MaxCallRecvMsgSize(s.limits.MaxSendMsgBytes)),
	}, append(endpointOptions, cfg.DialOptions...)...)
	if err := ledgerv1.RegisterLedgerServiceHandlerFromEndpoint(ctx, gateway, endpoint, dialOptions); err != nil {
		return nil, fmt.Errorf("HTTP gateway: %w", err)
	}
	if err := ledgerv1.RegisterLedgerAdminServiceHandlerFromEndpoint(ctx, gateway, endpoint, dialOptions); err != nil {
		return nil, fmt.Errorf("HTTP gateway: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("/", http.MaxBytesHandler(gateway, cfg.MaxRequestBytes))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, probeAnswer{Status: "ok"})
	})
	mux.Handle("GET /readyz", readiness{state: s.state})
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics.registry, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
			ErrorHandling: promhttp.ContinueOnError, // serve what could be collected
			Registry:      cfg.Metrics.registry,     // promhttp_metric_handler_errors_total
		}))
	}
	return mux, nil
}

// forwardedHeader is the gateway's default choice of the headers that
// become metadata, except that a caller can never set the keys in which
// the gateway forwards a client certificate's principal and credential id,
// and the caller's address.
func forwardedHeader(header string) (string, bool) {
	key, ok := runtime.DefaultHeaderMatcher(header)
	if strings.EqualFold(key, certificatePrincipalKey) || strings.EqualFold(key, certificateCredentialKey) || strings.EqualFold(key, sourceKey) {
		return "", false
	}
	return key, ok
}

// forwardCaller passes on the HTTP caller's source address and the
// principal of an HTTPS caller's verified client certificate ("" if it
// has no common name, which Auth refuses) with its credential id.
func forwardCaller(_ context.Context, r *http.Request) metadata.MD {
	md := metadata.Pairs(sourceKey, httpSource(r))
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		md.Set(certificatePrincipalKey, certificatePrincipal(r.TLS.VerifiedChains[0][0]))
		md.Set(certificateCredentialKey, certificateCredential(r.TLS.VerifiedChains[0][0]))
	}
	return md
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

// gatewayError writes a gRPC status as the gateway does by default, after
// giving an ErrorInfo to the statuses that the gateway itself makes (a body
// that is not valid JSON, the gRPC server out of reach), so that every
// answer carries a reason to branch on.
func gatewayError(ctx context.Context, mux *runtime.ServeMux, marshaler runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	runtime.DefaultHTTPErrorHandler(ctx, mux, marshaler, w, r, withReason(err))
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
