package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// madeID is the form of a request id that ledgerd makes.
var madeID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// The request ids that a caller may send, and ones ledgerd replaces.
var (
	keptIDs = []string{"pipeline-7/step:3", "A.b_c+d=e@f", strings.Repeat("x", server.MaxRequestIDLength)}
	// (Control characters are refused by the gRPC and net/http clients.)
	replacedIDs = []string{strings.Repeat("x", server.MaxRequestIDLength+1), "two words", "quote\"d", "semi;colon", "<script>"}
)

// finishedCalls returns the request log's "finished call" lines.
func finishedCalls(t *testing.T, log *ledgertest.LogBuffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var entry map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &entry), line)
		if entry["msg"] == "finished call" {
			lines = append(lines, entry)
		}
	}
	return lines
}

// TestGRPCRequestIDs checks that every gRPC call has a request id, the
// caller's when it is valid, in the response headers, the request log
// line and the ErrorInfo of an error.
func TestGRPCRequestIDs(t *testing.T) {
	t.Parallel()
	b := serveHTTP(t, ledgertest.Store(t, ledger.Config{}))
	conn, err := grpc.NewClient(b.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := ledgerv1.NewLedgerServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// complete sends a Complete under a token the key never had, which
	// fails with LEASE_LOST, and returns the id in the response headers and
	// the one in the error.
	complete := func(sent string) (header, inError string) {
		t.Helper()
		callCtx := ctx
		if sent != "" {
			callCtx = metadata.AppendToOutgoingContext(ctx, server.RequestIDKey, sent)
		}
		var md metadata.MD
		_, err := client.Complete(callCtx, &ledgerv1.CompleteRequest{Namespace: "ids", Key: "k", FencingToken: 99}, grpc.Header(&md))
		info := errorInfo(t, status.Convert(err))
		require.Equal(t, server.ReasonLeaseLost, info.GetReason(), "the error's own details are kept")
		require.Len(t, md.Get(server.RequestIDKey), 1)
		return md.Get(server.RequestIDKey)[0], info.GetMetadata()["request_id"]
	}

	for _, sent := range keptIDs {
		header, inError := complete(sent)
		require.Equal(t, sent, header)
		require.Equal(t, sent, inError)
	}
	for _, sent := range append(replacedIDs, "") {
		header, inError := complete(sent)
		require.Regexp(t, madeID, header, "%q is replaced", sent)
		require.Equal(t, header, inError)
	}

	var md metadata.MD
	_, err = client.Reserve(metadata.AppendToOutgoingContext(ctx, server.RequestIDKey, "run-42"),
		&ledgerv1.ReserveRequest{Namespace: "ids", Key: "k", Owner: "w"}, grpc.Header(&md))
	require.NoError(t, err)
	require.Equal(t, []string{"run-42"}, md.Get(server.RequestIDKey), "a call that succeeds has its id too")

	lines := finishedCalls(t, b.log)
	require.Len(t, lines, len(keptIDs)+len(replacedIDs)+2)
	for i, sent := range keptIDs {
		require.Equal(t, sent, lines[i]["request_id"])
	}
	for _, line := range lines[len(keptIDs) : len(lines)-1] {
		require.Regexp(t, madeID, line["request_id"])
	}
	require.Equal(t, "run-42", lines[len(lines)-1]["request_id"])
}

// TestHTTPRequestIDs checks the same on the HTTP port, with X-Request-Id,
// for answers of the gRPC server and of the HTTP guard alike.
func TestHTTPRequestIDs(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	post := func(sent, contentType, body string) (int, http.Header, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, b.url+"/ledger.v1.LedgerService/Complete", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", contentType)
		if sent != "" {
			req.Header.Set("X-Request-ID", sent)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var answer map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
		return res.StatusCode, res.Header, answer
	}
	idInError := func(answer map[string]any) any {
		details, _ := answer["details"].([]any)
		require.NotEmpty(t, details, "%v", answer)
		metadata, _ := details[0].(map[string]any)["metadata"].(map[string]any)
		return metadata["request_id"]
	}
	const lost = `{"namespace": "ids", "key": "k", "fencingToken": "9"}`

	code, header, answer := post("pipeline-7/step:3", "application/json", lost)
	require.Equal(t, http.StatusConflict, code, "%v", answer)
	require.Equal(t, "pipeline-7/step:3", header.Get("X-Request-ID"))
	require.Empty(t, header.Values("Grpc-Metadata-X-Request-Id"), "given once, as X-Request-ID")
	require.Equal(t, "pipeline-7/step:3", idInError(answer))

	for _, sent := range append(replacedIDs, "") {
		_, header, answer := post(sent, "application/json", lost)
		id := header.Get("X-Request-ID")
		require.Regexp(t, madeID, id, "%q is replaced", sent)
		require.Equal(t, id, idInError(answer))
	}

	code, header, _ = post("refused-by-the-guard", "text/plain", lost)
	require.Equal(t, http.StatusUnsupportedMediaType, code)
	require.Equal(t, "refused-by-the-guard", header.Get("X-Request-ID"), "answers the gateway never forwards have the id too")

	lines := finishedCalls(t, b.log)
	require.Len(t, lines, len(replacedIDs)+2, "the guard's refusal never reached the gRPC server")
	require.Equal(t, "pipeline-7/step:3", lines[0]["request_id"])
}

// TestHTTPPropagatesTraceparent checks that a call through the HTTP port
// with a traceparent header has its server span in the caller's trace,
// as a child of the caller's span.
func TestHTTPPropagatesTraceparent(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	b := serveHTTPWith(t, ledgertest.Store(t, ledger.Config{}), server.Config{TracerProvider: tp})

	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	req, err := http.NewRequest(http.MethodPost, b.url+"/ledger.v1.LedgerService/Reserve",
		strings.NewReader(`{"namespace": "traced", "key": "k", "owner": "w"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+traceID+"-"+parentID+"-01")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusOK, res.StatusCode)

	var ended []sdktrace.ReadOnlySpan
	require.Eventually(t, func() bool {
		ended = spans.Ended()
		for _, span := range ended {
			if span.Name() == "ledger.v1.LedgerService/Reserve" {
				return true
			}
		}
		return false
	}, time.Minute, 10*time.Millisecond, "the server span ends after the answer")
	for _, span := range ended {
		if span.Name() != "ledger.v1.LedgerService/Reserve" {
			continue
		}
		require.Equal(t, traceID, span.SpanContext().TraceID().String())
		require.Equal(t, parentID, span.Parent().SpanID().String())
		require.True(t, span.Parent().IsRemote())
		var requestID string
		for _, attr := range span.Attributes() {
			if attr.Key == "ledgerd.request_id" {
				requestID = attr.Value.AsString()
			}
		}
		require.Equal(t, res.Header.Get("X-Request-ID"), requestID, "the span carries the call's request id")
	}
}
