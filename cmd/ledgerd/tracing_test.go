package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/otlptest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// TestServeExportsTraces runs the daemon with the OTEL_* variables
// pointing at an in-process OTLP receiver, and checks that a Reserve's
// server span and statement spans arrive, in one trace, with the call's
// request id.
func TestServeExportsTraces(t *testing.T) {
	t.Parallel()
	receiver := otlptest.Start(t)
	d := startDaemon(t, map[string]string{
		"LEDGER_DATABASE_URL":         pgtest.Schema(t),
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + receiver.Addr,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_SERVICE_NAME":           "ledgerd-test",
	})
	require.Contains(t, d.stdout.String(), `"msg":"tracing on: spans of every RPC and database statement","exporter":"OTLP grpc (http://`+receiver.Addr+`)"`)
	conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "traced-1")
	_, err = ledgerv1.NewLedgerServiceClient(conn).Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	require.NoError(t, d.stop(), "stopping sends the spans still buffered")

	var server otlptest.Span
	for _, span := range receiver.Spans() {
		if span.Name == "ledger.v1.LedgerService/Reserve" {
			server = span
		}
	}
	require.Equal(t, "ledgerd-test", server.Service)
	require.Equal(t, tracepb.Span_SPAN_KIND_SERVER, server.Kind)
	require.Equal(t, "traced-1", server.Attributes["ledgerd.request_id"])
	var statements []string
	for _, span := range receiver.Spans() {
		if span.TraceID == server.TraceID && span.ParentSpanID == server.SpanID {
			statements = append(statements, span.Name)
		}
	}
	require.Contains(t, statements, "reserve_insert")
}

func TestServeRefusesBadTracingVariables(t *testing.T) {
	t.Parallel()
	var stdout, stderr ledgertest.LogBuffer
	err := run(context.Background(), []string{"serve"}, env(map[string]string{
		"LEDGER_DATABASE_URL": "postgres://x/y", "LEDGER_INSECURE_DEV": "true", "LEDGER_LISTEN_ADDR": "127.0.0.1:0",
		"OTEL_TRACES_EXPORTER": "zipkin",
	}), &stdout, &stderr)
	require.EqualError(t, err, `OTEL_TRACES_EXPORTER="zipkin": ledgerd exports traces with "otlp", or not at all with "none"`)
}
