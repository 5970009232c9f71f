package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// chain runs handler under the server's interceptor chain, as grpc does.
func chain(t *testing.T, cfg Config, handler grpc.UnaryHandler) (any, error) {
	t.Helper()
	interceptors := unaryInterceptors(cfg.withDefaults())
	info := &grpc.UnaryServerInfo{FullMethod: "/ledger.v1.LedgerService/Reserve"}
	next := handler
	for i := len(interceptors) - 1; i >= 0; i-- {
		interceptor, inner := interceptors[i], next
		next = func(ctx context.Context, req any) (any, error) { return interceptor(ctx, req, info, inner) }
	}
	return next(context.Background(), "request")
}

func TestPanicBecomesInternalWithoutDetails(t *testing.T) {
	t.Parallel()
	var log strings.Builder
	cfg := Config{Logger: slog.New(slog.NewTextHandler(&log, nil))}
	_, err := chain(t, cfg, func(context.Context, any) (any, error) {
		panic("secret connection string postgres://admin:hunter2@db")
	})
	st := status.Convert(err)
	require.Equal(t, codes.Internal, st.Code())
	require.Equal(t, "internal error", st.Message())
	require.NotContains(t, st.String(), "hunter2")
	require.Contains(t, log.String(), "panic in handler", "the panic is logged for the operator")
}

func TestDeadlines(t *testing.T) {
	t.Parallel()
	cfg := Config{Logger: slog.New(slog.DiscardHandler), DefaultTimeout: 3 * time.Second, MaxTimeout: 7 * time.Second}
	remaining := func(ctx context.Context) time.Duration {
		var got time.Duration
		interceptors := unaryInterceptors(cfg.withDefaults())
		innermost := interceptors[len(interceptors)-1] // the deadline
		_, err := innermost(ctx, nil, &grpc.UnaryServerInfo{}, func(ctx context.Context, _ any) (any, error) {
			deadline, ok := ctx.Deadline()
			require.True(t, ok)
			got = time.Until(deadline)
			return nil, nil
		})
		require.NoError(t, err)
		return got
	}
	require.InDelta(t, 3*time.Second, remaining(context.Background()), float64(time.Second), "no deadline: the default")
	long, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	require.InDelta(t, 7*time.Second, remaining(long), float64(time.Second), "a longer deadline is capped")
	short, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.InDelta(t, 2*time.Second, remaining(short), float64(time.Second), "a shorter deadline is kept")
}
