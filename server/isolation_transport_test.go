package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// transportBundle is a ledgerd with authentication on both ports, its
// HTTP gateway in-process as cmd/ledgerd runs it, and an HTTP listener
// that counts the bytes the server reads.
type transportBundle struct {
	url    string // the HTTP port
	addr   string // host:port of the HTTP port
	conn   *grpc.ClientConn
	token  string // a worker's in namespace "ns"
	log    *ledgertest.LogBuffer
	read   *atomic.Int64 // bytes the HTTP server read from its connections
	ledger ledgertest.Bundle
}

func serveTransport(t *testing.T, limits server.Limits, httpCfg server.HTTPConfig) transportBundle {
	t.Helper()
	ctx := context.Background()
	b := ledgertest.Store(t, ledger.Config{})
	_, err := b.Store.GrantRole(ctx, ledger.RoleBinding{Principal: "svc", NamespacePattern: "ns", Role: ledger.RoleWorker}, "test")
	require.NoError(t, err)
	_, token, err := b.Store.CreateToken(ctx, "svc", "worker", 0, "test")
	require.NoError(t, err)
	auth := server.NewAuth(b.Store, server.AuthConfig{})
	require.NoError(t, auth.Load(ctx))

	log := &ledgertest.LogBuffer{}
	srv, err := server.New(b.Store, server.Config{Logger: slog.New(slog.NewJSONHandler(log, nil)), Auth: auth, Limits: limits})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := ledgertest.Dial(t, lis)

	gatewayCtx, closeGateway := context.WithCancel(ctx)
	handler, err := srv.HTTPHandler(gatewayCtx, httpCfg)
	require.NoError(t, err)
	httpServer := httptest.NewUnstartedServer(handler)
	read := &atomic.Int64{}
	httpServer.Listener = countingReads{Listener: httpServer.Listener, read: read}
	httpServer.Start()
	t.Cleanup(func() {
		httpServer.CloseClientConnections()
		httpServer.Close()
		shutdown, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
		require.NoError(t, <-served)
		closeGateway()
	})
	return transportBundle{url: httpServer.URL, addr: httpServer.Listener.Addr().String(), conn: conn, token: token, log: log, read: read, ledger: b}
}

// countingReads counts the bytes read from its connections.
type countingReads struct {
	net.Listener
	read *atomic.Int64
}

func (l countingReads) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: conn, read: l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// rawPost sends a POST's headers over a connection of its own, then body
// (written on another goroutine, whose write errors are ignored: the
// server may close the connection before it has all been sent), and
// returns the answer.
func rawPost(t *testing.T, addr, path string, header map[string]string, contentLength int64, body io.Reader) (int, map[string]any) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	var head strings.Builder
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\n", path, addr)
	if contentLength >= 0 {
		fmt.Fprintf(&head, "Content-Length: %d\r\n", contentLength)
	} else {
		head.WriteString("Transfer-Encoding: chunked\r\n")
	}
	for name, value := range header {
		fmt.Fprintf(&head, "%s: %s\r\n", name, value)
	}
	head.WriteString("\r\n")
	_, err = io.WriteString(conn, head.String())
	require.NoError(t, err)
	go func() {
		if contentLength < 0 {
			w := httpChunked(conn)
			_, _ = io.Copy(w, body)
			_ = w.Close()
			return
		}
		_, _ = io.Copy(conn, body)
	}()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(time.Minute))) // a generous bound: a hang fails
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	var answer map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
	return res.StatusCode, answer
}

// chunkWriter writes HTTP/1.1 chunks.
type chunkWriter struct{ w io.Writer }

func httpChunked(w io.Writer) chunkWriter { return chunkWriter{w: w} }

func (c chunkWriter) Write(p []byte) (int, error) {
	if _, err := fmt.Fprintf(c.w, "%x\r\n", len(p)); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	if err != nil {
		return n, err
	}
	_, err = io.WriteString(c.w, "\r\n")
	return n, err
}

func (c chunkWriter) Close() error {
	_, err := io.WriteString(c.w, "0\r\n\r\n")
	return err
}

// jsonBody is a Complete request of size bytes of valid JSON: a result
// of spaces would be needless, so the padding is inside a string.
func jsonBody(size int64) io.Reader {
	head := `{"namespace":"ns","key":"k","owner":"o","fencingToken":"1","result":"`
	tail := `"}`
	return io.MultiReader(strings.NewReader(head), io.LimitReader(repeatReader('A'), size-int64(len(head)+len(tail))), strings.NewReader(tail))
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

const completePath = "/ledger.v1.LedgerService/Complete"

// TestIsolationHTTPBodyNotReadWithoutCredentials: a 30 MB body without
// credentials is answered 401 without being read (the server reads its
// headers and a few kilobytes at most); so is one with a bad token. The
// same body with a valid token is refused with 413 before it is read, for
// it cannot be forwarded.
func TestIsolationHTTPBodyNotReadWithoutCredentials(t *testing.T) {
	t.Parallel()
	b := serveTransport(t, server.Limits{}, server.HTTPConfig{})
	const size = 30_000_000
	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
		reason string
	}{
		{"no credentials", map[string]string{"Content-Type": "application/json"}, http.StatusUnauthorized, server.ReasonUnauthenticated},
		{"bad token", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer ldg_0123456789abcdef_nope"}, http.StatusUnauthorized, server.ReasonUnauthenticated},
		{"valid token, too large", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + b.token}, http.StatusRequestEntityTooLarge, server.ReasonInvalidArgument},
	} {
		before := b.read.Load()
		code, answer := rawPost(t, b.addr, completePath, tc.header, size, jsonBody(size))
		require.Equal(t, tc.status, code, "%s: %v", tc.name, answer)
		requireAnswerReason(t, tc.reason, answer)
		require.Less(t, b.read.Load()-before, int64(1<<20), "%s: the server read the body", tc.name)
	}

	// A chunked body, whose size is not known in advance, is read up to
	// the limit and no further.
	limit := server.HTTPRequestBytes(server.MaxRequestBytes(ledger.DefaultLimits()))
	before := b.read.Load()
	code, answer := rawPost(t, b.addr, completePath, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + b.token}, -1, jsonBody(size))
	require.Equal(t, http.StatusRequestEntityTooLarge, code, "%v", answer)
	require.Less(t, b.read.Load()-before, limit+1<<20)
	require.Zero(t, entryCount(t, b.ledger), "nothing was written")
}

// TestIsolationHTTPSlowBody: a body that stops arriving is cut off by the
// body read timeout with 408, and its connection closed.
func TestIsolationHTTPSlowBody(t *testing.T) {
	t.Parallel()
	b := serveTransport(t, server.Limits{}, server.HTTPConfig{BodyReadTimeout: 200 * time.Millisecond})
	stalled := io.MultiReader(strings.NewReader(`{"namespace":"ns",`), blockingReader{done: t.Context().Done()})
	code, answer := rawPost(t, b.addr, completePath, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + b.token}, 1000, stalled)
	require.Equal(t, http.StatusRequestTimeout, code, "%v", answer)
	requireAnswerReason(t, server.ReasonDeadlineExceeded, answer)
}

// blockingReader blocks until done is closed, then ends.
type blockingReader struct{ done <-chan struct{} }

func (r blockingReader) Read([]byte) (int, error) {
	<-r.done
	return 0, io.EOF
}

// TestIsolationHTTPHeadersTooLarge: headers larger than the HTTP port's
// limit are refused with 431 (they once reached the gRPC server's limit
// and came back 500 INTERNAL); headers within it are served.
func TestIsolationHTTPHeadersTooLarge(t *testing.T) {
	t.Parallel()
	b := serveTransport(t, server.Limits{}, server.HTTPConfig{})
	for _, header := range []string{"Authorization", "User-Agent"} {
		req, err := http.NewRequest(http.MethodPost, b.url+"/ledger.v1.LedgerService/Lookup", strings.NewReader(`{"namespace":"ns","key":"k"}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(header, "Bearer "+strings.Repeat("a", 900<<10))
		code, answer := do(t, req)
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, code, "%s: %v", header, answer)
		requireAnswerReason(t, server.ReasonInvalidArgument, answer)
	}
	req, err := http.NewRequest(http.MethodPost, b.url+"/ledger.v1.LedgerService/Lookup", strings.NewReader(`{"namespace":"ns","key":"k"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("User-Agent", strings.Repeat("a", 32<<10))
	code, answer := do(t, req)
	require.Equal(t, http.StatusNotFound, code, "32 KiB of headers are served: %v", answer)
}

// TestIsolationHTTPOnlyJSON: a body that is not declared application/json
// (text/plain, which a browser sends to any origin without asking, a form,
// or none at all) is refused with 415 before it is read or authorized;
// charset parameters are allowed.
func TestIsolationHTTPOnlyJSON(t *testing.T) {
	t.Parallel()
	b := serveTransport(t, server.Limits{}, server.HTTPConfig{})
	for contentType, want := range map[string]int{
		"text/plain":                        http.StatusUnsupportedMediaType,
		"text/plain; charset=utf-8":         http.StatusUnsupportedMediaType,
		"application/x-www-form-urlencoded": http.StatusUnsupportedMediaType,
		"multipart/form-data; boundary=x":   http.StatusUnsupportedMediaType,
		"":                                  http.StatusUnsupportedMediaType,
		"application/json":                  http.StatusOK,
		"application/json; charset=utf-8":   http.StatusOK,
		"Application/JSON":                  http.StatusOK,
	} {
		req, err := http.NewRequest(http.MethodPost, b.url+"/ledger.v1.LedgerService/Reserve", strings.NewReader(`{"namespace":"ns","key":"k","owner":"o"}`))
		require.NoError(t, err)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		req.Header.Set("Authorization", "Bearer "+b.token)
		code, answer := do(t, req)
		require.Equal(t, want, code, "%q: %v", contentType, answer)
		if want != http.StatusOK {
			requireAnswerReason(t, server.ReasonInvalidArgument, answer)
		}
	}
	require.Equal(t, 1, entryCount(t, b.ledger), "only the JSON Reserves reserved")
}

// TestIsolationSourceFromTrustedProxiesOnly: the request log's
// peer.address is the HTTP caller's address; X-Forwarded-For is believed
// only from a trusted proxy, and then its rightmost untrusted address is
// the source.
func TestIsolationSourceFromTrustedProxiesOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		xff     string
		want    string // "" for the caller's own address
	}{
		{"no trusted proxies", nil, "203.0.113.7", ""},
		{"caller not trusted", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "203.0.113.7", ""},
		{"trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "203.0.113.7", "203.0.113.7"},
		{"forged entries left of the client", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}, "198.51.100.1, 203.0.113.7, 10.1.2.3", "203.0.113.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := serveTransport(t, server.Limits{}, server.HTTPConfig{TrustedProxies: tc.trusted})
			req, err := http.NewRequest(http.MethodPost, b.url+"/ledger.v1.LedgerService/Lookup", strings.NewReader(`{"namespace":"ns","key":"k"}`))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+b.token)
			req.Header.Set("X-Forwarded-For", tc.xff)
			var local string
			client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					local = conn.LocalAddr().String()
				}
				return conn, err
			}}}
			res, err := client.Do(req)
			require.NoError(t, err)
			_ = res.Body.Close()
			require.Equal(t, http.StatusNotFound, res.StatusCode)
			want := tc.want
			if want == "" {
				want = local
			}
			line := logLine(t, b.log, "finished call")
			require.Equal(t, want, line["peer.address"], "%v", line)
		})
	}
}

// waitingForMessages counts the goroutines in which the gRPC server waits
// for a request message.
func waitingForMessages() int {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "\ngoogle.golang.org/grpc.recvAndDecompress(")
}

// openSilent opens n calls of a unary method whose request message is
// never sent, and returns a channel with the status each ends with.
func openSilent(t *testing.T, conn *grpc.ClientConn, ctx context.Context, n int) <-chan error {
	t.Helper()
	ended := make(chan error, n)
	for range n {
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, ledgerv1.LedgerService_Lookup_FullMethodName)
		require.NoError(t, err)
		go func() { ended <- stream.RecvMsg(&ledgerv1.LookupResponse{}) }()
	}
	return ended
}

// TestIsolationCredentialLessStreams: calls without credentials are
// refused before the server gives them a goroutine, so that a client
// opening streams it never sends on holds nothing; the health service
// stays open.
func TestIsolationCredentialLessStreams(t *testing.T) {
	// Not parallel: it counts the goroutines of the whole process.
	b := serveTransport(t, server.Limits{}, server.HTTPConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 200
	ended := openSilent(t, b.conn, ctx, n)
	for range n {
		select {
		case err := <-ended:
			requireCode(t, err, codes.Unauthenticated)
		case <-time.After(time.Minute):
			t.Fatalf("a credential-less call was not refused; %d server goroutines wait for messages", waitingForMessages())
		}
	}
	require.Zero(t, waitingForMessages())

	res, err := healthpb.NewHealthClient(b.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "health needs no credentials")
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, res.GetStatus())
}

// TestIsolationSilentStreamsAreBounded: calls with credentials (valid or
// not, which is decided once the message is in) that never send their
// message are cancelled after RequestReadTimeout, and no more than
// MaxPendingRequests wait at once: the rest are refused with UNAVAILABLE.
func TestIsolationSilentStreamsAreBounded(t *testing.T) {
	// Not parallel: it counts the goroutines of the whole process.
	b := serveTransport(t, server.Limits{RequestReadTimeout: 300 * time.Millisecond, MaxPendingRequests: 20}, server.HTTPConfig{})
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer ldg_0123456789abcdef_made-up"))
	defer cancel()
	const n = 50
	ended := openSilent(t, b.conn, ctx, n)
	got := map[codes.Code]int{}
	for range n {
		select {
		case err := <-ended:
			got[status.Code(err)]++
		case <-time.After(time.Minute):
			t.Fatalf("silent calls were not ended: %v so far; %d server goroutines wait for messages", got, waitingForMessages())
		}
	}
	require.Equal(t, n, got[codes.Canceled]+got[codes.Unavailable], "%v", got)
	require.LessOrEqual(t, got[codes.Canceled], n, "%v", got)
	require.GreaterOrEqual(t, got[codes.Unavailable], n-20, "at most 20 waited: %v", got)
	require.Eventually(t, func() bool { return waitingForMessages() == 0 }, time.Minute, 10*time.Millisecond)

	// A call that sends its message is served as usual.
	_, err := ledgerv1.NewLedgerServiceClient(b.conn).Lookup(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+b.token),
		&ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	requireCode(t, err, codes.NotFound)
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var answer map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
	return res.StatusCode, answer
}

// requireAnswerReason checks the ErrorInfo reason of an HTTP error answer.
func requireAnswerReason(t *testing.T, reason string, answer map[string]any) {
	t.Helper()
	details, _ := answer["details"].([]any)
	require.NotEmpty(t, details, "%v", answer)
	require.Equal(t, reason, details[0].(map[string]any)["reason"], "%v", answer)
}

// entryCount is the number of entries in the ledger.
func entryCount(t *testing.T, b ledgertest.Bundle) int {
	t.Helper()
	var n int
	require.NoError(t, b.Pool.QueryRow(context.Background(), `SELECT count(*) FROM entries`).Scan(&n))
	return n
}

// logLine returns the only JSON log line with message msg.
func logLine(t *testing.T, log *ledgertest.LogBuffer, msg string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var entry map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &entry), line)
		if entry["msg"] == msg {
			found = append(found, entry)
		}
	}
	require.Len(t, found, 1, "%s", log)
	return found[0]
}
