package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// BenchmarkRequestLog is the request log interceptor around a handler that
// does nothing, at the levels ledgerd runs with: warn (the line is
// dropped, as under ledgerbench) and info (the line is written, here to
// io.Discard).
func BenchmarkRequestLog(b *testing.B) {
	for _, level := range []slog.Level{slog.LevelWarn, slog.LevelInfo} {
		b.Run(level.String(), func(b *testing.B) {
			//nolint:sloglint // the benchmark measures what the JSON handler costs, so it must encode
			logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))
			benchInterceptor(b, requestLog(logger))
		})
	}
}

func benchInterceptor(b *testing.B, interceptor grpc.UnaryServerInterceptor) {
	b.Helper()
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}})
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req := &ledgerv1.ReserveRequest{Namespace: "ledgerbench", Key: "keys-abcdef-000123", Owner: "worker-7"}
	resp := &ledgerv1.ReserveResponse{Outcome: &ledgerv1.ReserveResponse_Completed{Completed: &ledgerv1.Completed{}}}
	info := &grpc.UnaryServerInfo{FullMethod: ledgerv1.LedgerService_Reserve_FullMethodName}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := interceptor(ctx, req, info, handler); err != nil {
			b.Fatal(err)
		}
	}
}
