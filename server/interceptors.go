package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// unaryInterceptors returns the chain, outermost first: the RPC metrics
// (when configured) count every call, a panic included, as its client saw
// it, and the failed ones by reason; the request id is given to every call
// and put in every error's details; recovery catches a panic anywhere below it; the request log sees the
// final status, and the outcome that the outcome interceptor below it
// works out; the deadline bounds the handler.
func unaryInterceptors(cfg Config) []grpc.UnaryServerInterceptor {
	logger := cfg.Logger
	var chain []grpc.UnaryServerInterceptor
	if cfg.Metrics != nil {
		chain = append(chain, cfg.Metrics.rpcs.UnaryServerInterceptor(), cfg.Metrics.errorInterceptor())
	}
	return append(chain,
		requestIDInterceptor,
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(
			func(ctx context.Context, p any) error {
				// The panic value and stack go to the log, never to the client.
				logger.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
				return withDetails(codes.Internal, ReasonInternal, "internal error", nil)
			})),
		selector.UnaryServerInterceptor(requestLog(logger), selector.MatchFunc(notHealthCheck)),
		rejectUndecodable(logger), // before auth: a request it cannot read names no namespace (see codec.go)
		authInterceptor(cfg),
		rateLimitInterceptor(cfg.limiter()),
		outcomeInterceptor(cfg.Metrics, cfg.activity),
		deadlineInterceptor(cfg.DefaultTimeout, cfg.MaxTimeout),
	)
}

// requestLog logs one line per RPC when it finishes, "finished call", with
// the fields go-grpc-middleware's logging interceptor writes (grpc.service,
// grpc.method, grpc.code, grpc.error, peer.address, grpc.start_time,
// grpc.request.deadline) at the level it gives the code (INFO for OK, WARN
// for client errors, ERROR for server errors), and duration_ms, the
// request's namespace and key, the outcome (see callOutcome.logValue) and
// the caller's principal and credential id (and why authentication failed),
// which the interceptors further down the chain leave in a slot of the
// context (see callRecord), and request_id (see requestIDInterceptor),
// which it also puts on the call's span with the namespace and outcome.
// peer.address is callSource: the HTTP caller's
// for a call through the gateway. Nothing is built for a line the logger
// drops: at 10k calls a second the middleware's own field building was a
// tenth of ledgerd's CPU.
func requestLog(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		record := new(callRecord)
		resp, err := handler(context.WithValue(ctx, callRecordKey{}, record), req)
		code := status.Code(err)
		namespace, key := requestKey(req)
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(spanRequestID.String(requestID(ctx)), spanNamespace.String(namespace), spanOutcome.String(record.outcome))
		}
		level := slog.Level(logging.DefaultServerCodeToLevel(code))
		if !logger.Enabled(ctx, level) {
			return resp, err
		}
		service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethod, "/"), "/")
		attrs := make([]slog.Attr, 0, 18)
		if namespace != "" {
			attrs = append(attrs, slog.String("namespace", namespace))
		}
		if key != "" {
			attrs = append(attrs, slog.String("key", key))
		}
		if record.outcome != "" {
			attrs = append(attrs, slog.String("outcome", record.outcome))
		}
		if record.principal != "" {
			attrs = append(attrs, slog.String("principal", record.principal))
		}
		if record.credential != "" {
			attrs = append(attrs, slog.String("credential", record.credential))
		}
		if record.refusal != "" {
			attrs = append(attrs, slog.String("auth.refusal", record.refusal))
		}
		if id := requestID(ctx); id != "" {
			attrs = append(attrs, slog.String(requestIDField, id))
		}
		attrs = append(attrs, slog.String("protocol", "grpc"), slog.String("grpc.component", "server"),
			slog.String("grpc.service", service), slog.String("grpc.method", method),
			slog.String("grpc.method_type", "unary"))
		if source := callSource(ctx); source != "" {
			attrs = append(attrs, slog.String("peer.address", source))
		}
		attrs = append(attrs, slog.String("grpc.start_time", start.Format(time.RFC3339)))
		if deadline, ok := ctx.Deadline(); ok {
			attrs = append(attrs, slog.String("grpc.request.deadline", deadline.Format(time.RFC3339)))
		}
		attrs = append(attrs, slog.String("grpc.code", code.String()))
		if err != nil {
			attrs = append(attrs, slog.String("grpc.error", err.Error()))
		}
		attrs = append(attrs, slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000))
		logger.LogAttrs(ctx, level, "finished call", attrs...)
		return resp, err
	}
}

// callRecord is what the interceptors below the request log leave for its
// line, in a slot of the context (callRecordKey): the outcome, left by the
// outcome interceptor, and the caller's identity, left by Auth.
type callRecord struct {
	outcome string // see callOutcome.logValue
	// principal is the authenticated principal, or that of a revoked or
	// expired token presented with its right secret.
	principal string
	// credential is what the caller presented: "token:<id>" (never the
	// secret) or "cert-sha256:<fingerprint>"; "" if nothing readable.
	credential string
	refusal    string // why authentication failed (see refusalReasons)
}

// callRecordKey is the context key of a call's *callRecord.
type callRecordKey struct{}

// noteIdentity leaves what a call presented for the request log line, if
// the call has one.
func noteIdentity(ctx context.Context, at attempt) {
	if record, ok := ctx.Value(callRecordKey{}).(*callRecord); ok {
		record.principal, record.credential, record.refusal = at.principal, at.credential, at.refusal
	}
}

// notHealthCheck keeps health probes, which arrive every few seconds, out
// of the request log.
func notHealthCheck(_ context.Context, call interceptors.CallMeta) bool {
	return call.Service != healthpb.Health_ServiceDesc.ServiceName
}

// deadlineInterceptor gives a request without a deadline the default one,
// and caps a longer deadline at max, so that no request can hold a
// database connection indefinitely.
func deadlineInterceptor(defaultTimeout, maxTimeout time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		deadline, ok := ctx.Deadline()
		switch {
		case !ok:
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
			defer cancel()
		case time.Until(deadline) > maxTimeout:
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, maxTimeout)
			defer cancel()
		}
		return handler(ctx, req)
	}
}

// outcomeInterceptor works out what each call did to the ledger (see
// callOutcome), leaves it for the request log, and records it in metrics
// and in the namespaces' recent activity (each unless nil).
func outcomeInterceptor(metrics *Metrics, recent *activity) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		call := outcomeOf(req, resp, err)
		if record, ok := ctx.Value(callRecordKey{}).(*callRecord); ok {
			record.outcome = call.logValue()
		}
		if metrics != nil {
			metrics.observe(methodName(info.FullMethod), call)
		}
		recent.record(call)
		return resp, err
	}
}

// callOutcome is what one RPC did to the ledger, derived from its request
// and its answer.
type callOutcome struct {
	namespace string
	// reserve is a Reserve's outcome (outcomeAcquired and the like), or
	// outcomeMismatch for a Reserve refused with FINGERPRINT_MISMATCH; empty
	// for other calls and other errors.
	reserve string
	// reason is the ErrorInfo reason of a call that failed; empty if none.
	reason string
	failed bool
}

func outcomeOf(req, resp any, err error) callOutcome {
	namespace, _ := requestKey(req)
	call := callOutcome{namespace: namespace}
	if err != nil {
		call.failed = true
		call.reason = reasonOf(err)
		if call.reason == ReasonFingerprintMismatch {
			call.reserve = outcomeMismatch
		}
		return call
	}
	if r, ok := resp.(*ledgerv1.ReserveResponse); ok {
		switch o := r.GetOutcome().(type) {
		case *ledgerv1.ReserveResponse_Acquired:
			call.reserve = outcomeAcquired
			if o.Acquired.GetTakeover() {
				call.reserve = outcomeTakeover
			}
		case *ledgerv1.ReserveResponse_Completed:
			call.reserve = outcomeReplayed
		case *ledgerv1.ReserveResponse_InProgress:
			call.reserve = outcomeInProgress
		case *ledgerv1.ReserveResponse_Failed:
			call.reserve = outcomeFailed
		}
	}
	return call
}

// logValue is the outcome field of the request log line: the ErrorInfo
// reason of a failed call ("error" if it has none), a Reserve's outcome, or
// "ok".
func (c callOutcome) logValue() string {
	switch {
	case c.failed && c.reason != "":
		return c.reason
	case c.failed:
		return "error"
	case c.reserve != "":
		return c.reserve
	default:
		return "ok"
	}
}

// requestKey returns the namespace and key of a request that has them
// (every LedgerService request, and most admin ones).
func requestKey(req any) (namespace, key string) {
	if r, ok := req.(interface{ GetNamespace() string }); ok {
		namespace = r.GetNamespace()
	}
	if r, ok := req.(interface{ GetKey() string }); ok {
		key = r.GetKey()
	}
	return namespace, key
}

// reasonOf returns the ErrorInfo reason of a status error, or "".
func reasonOf(err error) string {
	for _, detail := range status.Convert(err).Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// methodName is the method of a full gRPC method name: "Complete" for
// "/ledger.v1.LedgerService/Complete".
func methodName(fullMethod string) string {
	return fullMethod[strings.LastIndex(fullMethod, "/")+1:]
}

// authInterceptor is cfg.Auth's interceptor, counting denials in the
// metrics. Without Auth (development mode), it lets every call through but
// the token and role RPCs (see credentialMethods).
func authInterceptor(cfg Config) grpc.UnaryServerInterceptor {
	var denied func(string)
	if cfg.Metrics != nil {
		denied = cfg.Metrics.denied
	}
	if cfg.Auth == nil {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if credentialMethods[info.FullMethod] {
				if denied != nil {
					denied(info.FullMethod)
				}
				return nil, withDetails(codes.PermissionDenied, ReasonPermissionDenied, fmt.Sprintf(
					"%s is refused without authentication (development mode): tokens and role bindings are managed on a ledgerd with authentication",
					methodName(info.FullMethod)), nil)
			}
			return handler(ctx, req)
		}
	}
	return cfg.Auth.UnaryInterceptor(denied)
}

// credentialMethods are the RPCs that a server without authentication
// refuses: a token or a role binding made there would be stored in a
// database that ledgerd replicas with authentication may share (a token
// minted anonymously would work on all of them), and listing or revoking
// theirs is no business of an anonymous caller either.
var credentialMethods = map[string]bool{
	ledgerv1.LedgerAdminService_CreateToken_FullMethodName:      true,
	ledgerv1.LedgerAdminService_ListTokens_FullMethodName:       true,
	ledgerv1.LedgerAdminService_RevokeToken_FullMethodName:      true,
	ledgerv1.LedgerAdminService_GrantRole_FullMethodName:        true,
	ledgerv1.LedgerAdminService_RevokeRole_FullMethodName:       true,
	ledgerv1.LedgerAdminService_ListRoleBindings_FullMethodName: true,
}
