// Package otlptest is an in-process OTLP trace receiver for tests: a gRPC
// server of the OTLP trace service on a loopback port (and an OTLP/HTTP
// handler), which keeps the spans it is sent, and a tracer provider that exports to it as ledgerd's
// does (OTLP over gRPC).
package otlptest

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is a span as the receiver got it, with ids in hex.
type Span struct {
	Service      string // the resource's service.name
	Name         string
	Kind         tracepb.Span_SpanKind
	TraceID      string
	SpanID       string
	ParentSpanID string // "" for a root span
	Attributes   map[string]string
	Links        []Link
	Events       []Event
}

// Link is a span's link to another span.
type Link struct{ TraceID, SpanID string }

// Event is an event of a span.
type Event struct {
	Name       string
	Attributes map[string]string
}

// Receiver is an OTLP trace receiver on a loopback port.
type Receiver struct {
	collectortracepb.UnimplementedTraceServiceServer

	// Addr is the host:port it listens on.
	Addr string

	mu    sync.Mutex
	spans []Span
}

// Start starts a Receiver, stopped when tb ends.
func Start(tb testing.TB) *Receiver {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	r := &Receiver{Addr: lis.Addr().String()}
	srv := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(srv, r)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		srv.Stop()
		require.NoError(tb, <-served)
	})
	return r
}

// Export keeps the spans of a request.
func (r *Receiver) Export(_ context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	var got []Span
	for _, resourceSpans := range req.GetResourceSpans() {
		service := attributes(resourceSpans.GetResource().GetAttributes())["service.name"]
		for _, scopeSpans := range resourceSpans.GetScopeSpans() {
			for _, span := range scopeSpans.GetSpans() {
				got = append(got, convert(service, span))
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

func convert(service string, span *tracepb.Span) Span {
	s := Span{
		Service:      service,
		Name:         span.GetName(),
		Kind:         span.GetKind(),
		TraceID:      hex.EncodeToString(span.GetTraceId()),
		SpanID:       hex.EncodeToString(span.GetSpanId()),
		ParentSpanID: hex.EncodeToString(span.GetParentSpanId()),
		Attributes:   attributes(span.GetAttributes()),
	}
	for _, link := range span.GetLinks() {
		s.Links = append(s.Links, Link{TraceID: hex.EncodeToString(link.GetTraceId()), SpanID: hex.EncodeToString(link.GetSpanId())})
	}
	for _, event := range span.GetEvents() {
		s.Events = append(s.Events, Event{Name: event.GetName(), Attributes: attributes(event.GetAttributes())})
	}
	return s
}

// attributes turns OTLP attributes into strings: numbers and booleans in
// decimal and true/false.
func attributes(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = strconv.FormatInt(v.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = strconv.FormatBool(v.BoolValue)
		default:
			m[kv.GetKey()] = fmt.Sprint(kv.GetValue())
		}
	}
	return m
}

// ServeHTTP receives spans over OTLP/HTTP (binary protobuf, POST
// /v1/traces): serve it with httptest.NewServer.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.Error(w, "POST /v1/traces", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var export collectortracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	response, _ := r.Export(req.Context(), &export)
	answer, _ := proto.Marshal(response)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(answer)
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// WaitFor waits until the spans received satisfy done, and returns them.
// Spans arrive as they end, and a server span ends after its answer was
// sent, so tests wait for them rather than assume they are there.
func (r *Receiver) WaitFor(tb testing.TB, what string, done func([]Span) bool) []Span {
	tb.Helper()
	var spans []Span
	require.Eventually(tb, func() bool {
		spans = r.Spans()
		return done(spans)
	}, time.Minute, 10*time.Millisecond, "waiting for %s; got %d spans: %v", what, len(r.Spans()), r.Spans())
	return spans
}

// TracerProvider returns a tracer provider that exports every span to r
// over OTLP/gRPC as it ends (no batching, so nothing waits for a timer),
// with service.name service; it is shut down when tb ends.
func (r *Receiver) TracerProvider(tb testing.TB, service string) *sdktrace.TracerProvider {
	tb.Helper()
	exporter, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(r.Addr), otlptracegrpc.WithInsecure())
	require.NoError(tb, err)
	res, err := resource.New(context.Background(), resource.WithAttributes(serviceName(service)))
	require.NoError(tb, err)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter), sdktrace.WithResource(res))
	tb.Cleanup(func() { require.NoError(tb, tp.Shutdown(context.Background())) })
	return tp
}

func serviceName(name string) attribute.KeyValue { return attribute.String("service.name", name) }
