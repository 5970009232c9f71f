package gotest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/otlptest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// tracedBundle is a ledgerd that traces as `ledgerd serve` does with
// OTLP export on, and a pipeline that traces too, both exporting to one
// in-process OTLP receiver.
type tracedBundle struct {
	receiver *otlptest.Receiver
	pipeline *sdktrace.TracerProvider // the pipeline's own spans
	client   *ledgerclient.Client
	store    *ledger.Store
	pool     *pgxpool.Pool
}

// setupTraced starts a traced ledgerd over a fresh schema, with a pool of
// maxConns connections and coalesce as its coalescing.
func setupTraced(t *testing.T, maxConns int32, coalesce ledger.CoalesceConfig) tracedBundle {
	t.Helper()
	receiver := otlptest.Start(t)
	ledgerd := receiver.TracerProvider(t, "ledgerd")
	pipeline := receiver.TracerProvider(t, "pipeline")

	config, err := pgxpool.ParseConfig(pgtest.Schema(t))
	require.NoError(t, err)
	ledger.ConfigurePool(config, ledger.WithTracerProvider(ledgerd))
	config.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), config)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = ledger.Migrate(context.Background(), pool, nil)
	require.NoError(t, err)
	store, err := ledger.New(pool, ledger.Config{Coalesce: coalesce})
	require.NoError(t, err)

	srv, err := server.New(store, server.Config{Logger: slog.New(slog.DiscardHandler), TracerProvider: ledgerd})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(t, <-served)
	})
	client, err := ledgerclient.New("passthrough:///bufconn", ledgerclient.WithInsecure(),
		ledgerclient.WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })),
		ledgerclient.WithTracerProvider(pipeline), ledgerclient.WithPropagator(propagation.TraceContext{}))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, client.Close()) })
	return tracedBundle{receiver: receiver, pipeline: pipeline, client: client, store: store, pool: pool}
}

// find returns the spans that match.
func find(spans []otlptest.Span, match func(otlptest.Span) bool) []otlptest.Span {
	var found []otlptest.Span
	for _, span := range spans {
		if match(span) {
			found = append(found, span)
		}
	}
	return found
}

func named(service, name string, kind tracepb.Span_SpanKind) func(otlptest.Span) bool {
	return func(s otlptest.Span) bool { return s.Service == service && s.Name == name && s.Kind == kind }
}

func childOf(parent otlptest.Span) func(otlptest.Span) bool {
	return func(s otlptest.Span) bool { return s.TraceID == parent.TraceID && s.ParentSpanID == parent.SpanID }
}

// TestTraceOfAReserve checks that a Reserve made by the Go client inside
// a pipeline's span makes one trace: the pipeline's span, the client span
// under it, ledgerd's server span under that, and the spans of the
// statements the Reserve ran under the server span.
func TestTraceOfAReserve(t *testing.T) {
	noLeaks(t)
	t.Run("coalescing", func(t *testing.T) {
		t.Parallel()
		traceOfAReserve(t, ledger.CoalesceConfig{})
	})
	t.Run("no coalescing", func(t *testing.T) {
		t.Parallel()
		traceOfAReserve(t, ledger.CoalesceConfig{Disabled: true})
	})
}

func traceOfAReserve(t *testing.T, coalesce ledger.CoalesceConfig) {
	t.Helper()
	b := setupTraced(t, 4, coalesce)
	ctx, step := b.pipeline.Tracer("pipeline").Start(context.Background(), "step")
	response, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "order-1", Owner: "worker-1"})
	require.NoError(t, err)
	require.NotNil(t, response.GetAcquired())
	step.End()

	const method = "ledger.v1.LedgerService/Reserve"
	spans := b.receiver.WaitFor(t, "the pipeline's and ledgerd's spans", func(spans []otlptest.Span) bool {
		return len(find(spans, named("ledgerd", method, tracepb.Span_SPAN_KIND_SERVER))) == 1 &&
			len(find(spans, named("pipeline", "step", tracepb.Span_SPAN_KIND_INTERNAL))) == 1
	})
	root := find(spans, named("pipeline", "step", tracepb.Span_SPAN_KIND_INTERNAL))[0]
	require.Empty(t, root.ParentSpanID)
	clientSpans := find(spans, named("pipeline", method, tracepb.Span_SPAN_KIND_CLIENT))
	require.Len(t, clientSpans, 1)
	clientSpan := clientSpans[0]
	require.True(t, childOf(root)(clientSpan), "the client span is the pipeline span's child: %+v", clientSpan)

	serverSpan := find(spans, named("ledgerd", method, tracepb.Span_SPAN_KIND_SERVER))[0]
	require.True(t, childOf(clientSpan)(serverSpan), "ledgerd's span is the client span's child: %+v", serverSpan)
	require.Equal(t, namespace, serverSpan.Attributes["ledgerd.namespace"])
	require.Equal(t, "acquired", serverSpan.Attributes["ledgerd.outcome"])
	require.Len(t, serverSpan.Attributes["ledgerd.request_id"], 32, "a request id ledgerd made")

	statements := find(spans, func(s otlptest.Span) bool { return s.Service == "ledgerd" && s.Kind == tracepb.Span_SPAN_KIND_CLIENT })
	require.NotEmpty(t, statements)
	names := make([]string, 0, len(statements))
	for _, statement := range statements {
		require.True(t, childOf(serverSpan)(statement), "every statement of the Reserve is a child of its server span: %+v", statement)
		require.Equal(t, "postgresql", statement.Attributes["db.system.name"])
		require.Equal(t, statement.Name, statement.Attributes["db.query.summary"])
		if _, err := ledger.Statement(statement.Name); err == nil {
			require.NotContains(t, statement.Attributes, "db.query.text", "a statement file is named, not copied")
		} else {
			require.NotEmpty(t, statement.Attributes["db.query.text"], "a statement built in code is shown")
		}
		names = append(names, statement.Name)
	}
	require.Contains(t, names, "reserve_insert", "the Reserve's first statement, named by its file")
}

// TestTraceOfCoalescedLookups checks that a statement that served many
// Lookups at once is linked to each of their server spans, and that each
// of those notes the statement it rode. It makes coalescing gather exactly
// n Lookups: the pool's only connection is held, so that a first Lookup
// occupies a batch slot while n more queue behind it, and a batch leaves
// only once it is full (MaxWait).
func TestTraceOfCoalescedLookups(t *testing.T) {
	noLeaks(t)
	const n = 6
	b := setupTraced(t, 1, ledger.CoalesceConfig{MaxBatch: n, MaxInFlight: 2, MaxWait: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for i := range n + 1 {
		_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "k" + strconv.Itoa(i), Owner: "w"})
		require.NoError(t, err)
	}
	lookups := func() int64 { return b.store.CoalesceStats()["lookup"].Batches }
	before := lookups()

	held, err := b.pool.Acquire(ctx)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	lookup := func(key string) {
		ctx, span := b.pipeline.Tracer("pipeline").Start(ctx, "lookup "+key)
		defer span.End()
		if _, err := b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: namespace, Key: key}); err != nil {
			errs <- fmt.Errorf("lookup %s: %w", key, err)
		}
	}
	wg.Go(func() { lookup("k0") })
	require.Eventually(t, func() bool { return lookups() == before+1 }, patience, time.Millisecond, "the first Lookup waits for the connection")
	for i := 1; i <= n; i++ {
		wg.Go(func() { lookup("k" + strconv.Itoa(i)) })
	}
	require.Eventually(t, func() bool { return lookups() == before+2 }, patience, time.Millisecond, "the other Lookups leave as one batch")
	held.Release()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	const method = "ledger.v1.LedgerService/Lookup"
	spans := b.receiver.WaitFor(t, "the Lookups' server spans", func(spans []otlptest.Span) bool {
		return len(find(spans, named("ledgerd", method, tracepb.Span_SPAN_KIND_SERVER))) == n+1
	})
	batchSpans := find(spans, named("ledgerd", "lookup_batch", tracepb.Span_SPAN_KIND_CLIENT))
	require.Len(t, batchSpans, 1, "one statement served the n gathered Lookups")
	batch := batchSpans[0]
	require.Empty(t, batch.ParentSpanID, "a coalesced statement is no one call's child")
	require.Equal(t, strconv.Itoa(n), batch.Attributes["ledgerd.coalesced.calls"])
	require.Len(t, batch.Links, n)
	linked := make(map[otlptest.Link]bool, n)
	for _, link := range batch.Links {
		linked[link] = true
	}

	servers := find(spans, named("ledgerd", method, tracepb.Span_SPAN_KIND_SERVER))
	rode := 0
	for _, serverSpan := range servers {
		isLinked := linked[otlptest.Link{TraceID: serverSpan.TraceID, SpanID: serverSpan.SpanID}]
		if alone := find(find(spans, childOf(serverSpan)), named("ledgerd", "lookup", tracepb.Span_SPAN_KIND_CLIENT)); len(alone) == 1 {
			require.False(t, isLinked, "the first Lookup ran alone, its statement its span's child")
			continue
		}
		require.True(t, isLinked, "the statement is linked to every call it served: %+v", serverSpan)
		require.Len(t, serverSpan.Events, 1, "%+v", serverSpan)
		event := serverSpan.Events[0]
		require.Equal(t, "coalesced statement", event.Name)
		require.Equal(t, batch.TraceID, event.Attributes["ledgerd.statement.trace_id"])
		require.Equal(t, batch.SpanID, event.Attributes["ledgerd.statement.span_id"])
		require.Equal(t, strconv.Itoa(n), event.Attributes["ledgerd.coalesced.calls"])
		rode++
	}
	require.Equal(t, n, rode)
}

// TestRequestIDOnErrors checks that an *Error carries the request id under
// which ledgerd logged the failed call: the one given with WithRequestID,
// or the one ledgerd made.
func TestRequestIDOnErrors(t *testing.T) {
	noLeaks(t)
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	lost := &ledgerv1.CompleteRequest{Namespace: namespace, Key: "never-held", FencingToken: 7}

	_, err := b.client.Complete(ledgerclient.WithRequestID(ctx, "nightly-2026-12-07/load:3"), lost)
	var e *ledgerclient.Error
	require.ErrorAs(t, err, &e)
	require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)
	require.Equal(t, "nightly-2026-12-07/load:3", e.RequestID)

	_, err = b.client.Complete(ctx, lost)
	require.ErrorAs(t, err, &e)
	require.Regexp(t, `^[0-9a-f]{32}$`, e.RequestID, "one ledgerd made")
}
