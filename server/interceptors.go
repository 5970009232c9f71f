package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// unaryInterceptors returns the chain, outermost first: recovery catches a
// panic anywhere below it, the request log sees the final status, and the
// deadline bounds the handler.
func unaryInterceptors(cfg Config) []grpc.UnaryServerInterceptor {
	logger := cfg.Logger
	return []grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(
			func(ctx context.Context, p any) error {
				// The panic value and stack go to the log, never to the client.
				logger.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
				return withDetails(codes.Internal, ReasonInternal, "internal error", nil)
			})),
		selector.UnaryServerInterceptor(
			logging.UnaryServerInterceptor(slogAdapter(logger), logging.WithLogOnEvents(logging.FinishCall)),
			selector.MatchFunc(notHealthCheck)),
		deadlineInterceptor(cfg.DefaultTimeout, cfg.MaxTimeout),
	}
}

// notHealthCheck keeps health probes, which arrive every few seconds, out
// of the request log.
func notHealthCheck(_ context.Context, call interceptors.CallMeta) bool {
	return call.Service != healthpb.Health_ServiceDesc.ServiceName
}

func slogAdapter(logger *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, level logging.Level, msg string, fields ...any) {
		logger.Log(ctx, slog.Level(level), msg, fields...)
	})
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
