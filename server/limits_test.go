package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// memServer is an in-memory ledgerd configured by the test, with its log.
type memServer struct {
	lis    *bufconn.Listener
	conn   *grpc.ClientConn
	client ledgerv1.LedgerServiceClient
	ledger ledgertest.Bundle
	log    *ledgertest.LogBuffer // JSON lines
}

// serveMem serves b's store in memory with cfg; without a Logger in cfg,
// the server logs JSON lines to memServer.log.
func serveMem(tb testing.TB, b ledgertest.Bundle, cfg server.Config) memServer {
	tb.Helper()
	log := &ledgertest.LogBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(log, nil))
	}
	srv, err := server.New(b.Store, cfg)
	require.NoError(tb, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := ledgertest.Dial(tb, lis)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(tb, <-served)
	})
	return memServer{lis: lis, conn: conn, client: ledgerv1.NewLedgerServiceClient(conn), ledger: b, log: log}
}

// rawCodec sends and receives messages as they are on the wire: a []byte
// request, a *[]byte response. Its name makes the request's content type
// application/grpc+proto, as any client's.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// invokeRaw calls method with payload as the request's wire bytes.
func invokeRaw(ctx context.Context, conn *grpc.ClientConn, method string, payload []byte) error {
	var reply []byte
	return conn.Invoke(ctx, method, payload, &reply, grpc.ForceCodecV2(rawCodec{}))
}

// dbState sums up every table of the bundle's schema (row count and
// newest row version): it changes when a row is inserted, updated or
// deleted.
func dbState(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1`)
	require.NoError(tb, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(tb, err)
	require.NotEmpty(tb, tables)
	var state strings.Builder
	for _, table := range tables {
		var count, newest int64
		require.NoError(tb, pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(max(xmin::text::bigint), 0) FROM %s`,
			pgx.Identifier{table}.Sanitize())).Scan(&count, &newest))
		fmt.Fprintf(&state, "%s:%d/%d ", table, count, newest)
	}
	return state.String()
}

// requireCode checks a status error's code.
func requireCode(tb testing.TB, err error, code codes.Code) {
	tb.Helper()
	require.Equal(tb, code, status.Code(err), "%v", err)
}

func TestMaxRequestBytes(t *testing.T) {
	t.Parallel()
	require.Equal(t, 17<<20, server.MaxRequestBytes(ledger.DefaultLimits()), "the 16 MiB ceiling and 1 MiB for the other fields")
	require.Equal(t, 17<<20, server.MaxRequestBytes(ledger.Limits{}), "zero limits are the defaults")
	require.Equal(t, 4<<20, server.MaxRequestBytes(ledger.Limits{MaxResultBytes: 1 << 20}), "never below gRPC's 4 MiB")
}

// TestMessageSizeLimits: a request above the limit is refused before it
// is decoded, with RESOURCE_EXHAUSTED, and changes nothing; a response
// above the send limit fails the same way.
func TestMessageSizeLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := serveMem(t, ledgertest.Store(t, ledger.Config{}), server.Config{Limits: server.Limits{
		MaxRecvMsgBytes: 64 << 10,
		MaxSendMsgBytes: 32 << 10,
	}})
	_, err := s.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	before := dbState(t, s.ledger.Pool)

	_, err = s.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1, Result: make([]byte, 65<<10)})
	requireCode(t, err, codes.ResourceExhausted)
	require.Equal(t, before, dbState(t, s.ledger.Pool), "the refused Complete changed nothing")
	entry, err := s.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_LEASED, entry.GetEntry().GetState())

	// Within the request limit, above the send limit: stored, but a
	// Lookup or a replay of it cannot be sent.
	_, err = s.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1, Result: make([]byte, 40<<10)})
	require.NoError(t, err)
	_, err = s.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	requireCode(t, err, codes.ResourceExhausted)
	_, err = s.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w2"})
	requireCode(t, err, codes.ResourceExhausted)
}

// TestDefaultMessageLimitFollowsTheResultCeiling: by default, the request
// limit is sized from the store's result ceiling, so a result above a
// namespace's maximum but within the message limit is INVALID_ARGUMENT
// naming the field, and only a message beyond it is RESOURCE_EXHAUSTED.
func TestDefaultMessageLimitFollowsTheResultCeiling(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ceiling := ledger.Limits{MaxResultBytes: 1 << 20} // 4 MiB messages, the minimum
	s := serveMem(t, ledgertest.Store(t, ledger.Config{Limits: ceiling}), server.Config{})
	_, err := s.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)

	_, err = s.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1, Result: make([]byte, (1<<20)+1)})
	requireReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	_, err = s.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1, Result: make([]byte, 4<<20)})
	requireCode(t, err, codes.ResourceExhausted)
	_, err = s.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1, Result: make([]byte, 1<<20)})
	require.NoError(t, err, "a result of the namespace's maximum fits")
}

// TestConcurrentStreamsLimit: with one stream per connection, a Reserve
// that waits holds the connection's only stream; another call on that
// connection waits for it (gRPC clients queue), while another connection
// is served at once.
func TestConcurrentStreamsLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := serveMem(t, ledgertest.Store(t, ledger.Config{}), server.Config{Limits: server.Limits{MaxConcurrentStreams: 1}})
	_, err := s.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder"})
	require.NoError(t, err)

	waited := make(chan error, 1)
	go func() {
		res, err := s.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: durationpb.New(time.Second)})
		if err == nil && res.GetInProgress() == nil {
			err = fmt.Errorf("want IN_PROGRESS after the wait, got %v", res)
		}
		waited <- err
	}()
	require.Eventually(t, func() bool { return s.ledger.Store.Waiters() == 1 }, time.Minute, 5*time.Millisecond)

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = s.client.Lookup(short, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	requireCode(t, err, codes.DeadlineExceeded)

	other := ledgerv1.NewLedgerServiceClient(ledgertest.Dial(t, s.lis))
	_, err = other.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.NoError(t, err, "another connection has streams of its own")

	require.NoError(t, <-waited)
	_, err = s.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.NoError(t, err, "the stream is free again")
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return conn, err
}

// TestMaxConnectionAgeLetsCallsFinish: a connection past its age is told
// to go away, but a call in flight on it finishes (the grace defaults to
// the longest deadline), and the client reconnects for the next call.
func TestMaxConnectionAgeLetsCallsFinish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := ledgertest.Store(t, ledger.Config{})
	srv, err := server.New(b.Store, server.Config{Logger: slog.New(slog.DiscardHandler), Limits: server.Limits{MaxConnectionAge: 200 * time.Millisecond}})
	require.NoError(t, err)
	lis := &countingListener{Listener: bufconn.Listen(1 << 20)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		shutdown, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
		require.NoError(t, <-served)
	})
	client := ledgerv1.NewLedgerServiceClient(ledgertest.Dial(t, lis.Listener.(*bufconn.Listener)))

	_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder"})
	require.NoError(t, err)
	res, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: durationpb.New(time.Second)})
	require.NoError(t, err, "the waiting call outlived its connection's age")
	require.NotNil(t, res.GetInProgress())
	_, err = client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.NoError(t, err)
	require.GreaterOrEqual(t, lis.accepted.Load(), int32(2), "the client reconnected")
}

// TestKeepaliveEnforcement: a client that pings more often than
// KeepaliveMinTime is told to go away (GOAWAY ENHANCE_YOUR_CALM,
// "too_many_pings"). The client here speaks raw HTTP/2, since gRPC clients
// do not ping more often than every 10s.
func TestKeepaliveEnforcement(t *testing.T) {
	t.Parallel()
	s := serveMem(t, ledgertest.Store(t, ledger.Config{}), server.Config{Limits: server.Limits{KeepaliveMinTime: time.Hour}})
	conn, err := s.lis.Dial()
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	framer := http2.NewFramer(conn, conn)
	require.NoError(t, framer.WriteSettings())

	for i := range 10 {
		require.NoError(t, framer.WritePing(false, [8]byte{byte(i)}))
	}
	for {
		frame, err := framer.ReadFrame()
		require.NoError(t, err, "the server must answer with GOAWAY before closing")
		if goAway, ok := frame.(*http2.GoAwayFrame); ok {
			require.Equal(t, http2.ErrCodeEnhanceYourCalm, goAway.ErrCode)
			require.Equal(t, "too_many_pings", string(goAway.DebugData()))
			return
		}
	}
}

// TestStaticFlowControlWindows: ledgerd announces fixed flow-control
// windows (1 MiB a call, 4 MiB a connection) and so never sends the PING
// frames of grpc-go's bandwidth-delay estimator, which otherwise come with
// a call's request, one more frame each way for every call. The client
// speaks raw HTTP/2 to see every frame.
func TestStaticFlowControlWindows(t *testing.T) {
	t.Parallel()
	s := serveMem(t, ledgertest.Store(t, ledger.Config{}), server.Config{})
	conn, err := s.lis.Dial()
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(time.Minute)))
	_, err = conn.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	framer := http2.NewFramer(conn, conn)
	require.NoError(t, framer.WriteSettings())

	var headers bytes.Buffer
	encoder := hpack.NewEncoder(&headers)
	var windows []uint32 // the stream window announced, then the connection's update
	pings := 0
	for stream := uint32(1); stream <= 5; stream += 2 {
		headers.Reset()
		for _, field := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "ledgerd"},
			{":path", "/grpc.health.v1.Health/Check"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			require.NoError(t, encoder.WriteField(hpack.HeaderField{Name: field[0], Value: field[1]}))
		}
		require.NoError(t, framer.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: headers.Bytes(), EndHeaders: true}))
		require.NoError(t, framer.WriteData(stream, true, []byte{0, 0, 0, 0, 0})) // an empty HealthCheckRequest
		for answered := false; !answered; {
			frame, err := framer.ReadFrame()
			require.NoError(t, err, "the call on stream %d was not answered", stream)
			switch f := frame.(type) {
			case *http2.SettingsFrame:
				if f.IsAck() {
					continue
				}
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					windows = append(windows, v)
				}
				require.NoError(t, framer.WriteSettingsAck())
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					windows = append(windows, f.Increment)
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					pings++
					require.NoError(t, framer.WritePing(true, f.Data))
				}
			case *http2.HeadersFrame:
				answered = f.StreamID == stream && f.StreamEnded()
			}
		}
	}
	require.Zero(t, pings, "the server pinged during calls")
	require.Equal(t, []uint32{1 << 20, 4<<20 - 65535}, windows, "the stream window, then the connection window's increment over HTTP/2's 65,535 bytes")
}

// TestInvalidLimits: New refuses limits that cannot work.
func TestInvalidLimits(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{})
	for _, limits := range []server.Limits{
		{KeepaliveTime: time.Millisecond},
		{KeepaliveMinTime: -time.Second},
		{MaxSendMsgBytes: -1},
		{ConnectionTimeout: -time.Second},
	} {
		_, err := server.New(b.Store, server.Config{Limits: limits})
		require.Error(t, err, "%+v", limits)
	}
}

// TestStatementTimeoutIsUnavailable: a statement the database cancels for
// its statement_timeout (here, a Complete waiting for a row lock that a
// stalled session holds) fails with UNAVAILABLE, safe to retry, and the
// retry succeeds once the lock is gone.
func TestStatementTimeoutIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := ledgertest.Store(t, ledger.Config{})
	poolConfig := b.Pool.Config().Copy()
	poolConfig.ConnConfig.RuntimeParams["statement_timeout"] = "200"
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store, err := ledger.New(pool, ledgertest.Config(ledger.Config{}))
	require.NoError(t, err)
	s := serveMem(t, ledgertest.Bundle{Store: store, Pool: pool}, server.Config{})

	_, err = s.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	locker, err := b.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = locker.Exec(ctx, `SELECT 1 FROM entries WHERE namespace = 'ns' AND key = 'k' FOR UPDATE`)
	require.NoError(t, err)

	started := time.Now()
	_, err = s.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1, Result: []byte("r")})
	requireReason(t, err, codes.Unavailable, server.ReasonUnavailable)
	require.Less(t, time.Since(started), 5*time.Second, "cancelled by the statement timeout, not by the call's deadline")
	require.Contains(t, s.log.String(), "canceling statement due to statement timeout", "the cause is logged for the operator")
	require.NotContains(t, status.Convert(err).Message(), "statement", "no database text to the client")

	require.NoError(t, locker.Rollback(ctx))
	_, err = s.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1, Result: []byte("r")})
	require.NoError(t, err, "the retry succeeds")
}

// loggedCode reports whether the request log has a call that ended with
// code.
func loggedCode(log *ledgertest.LogBuffer, code codes.Code) bool {
	return strings.Contains(log.String(), `"grpc.code":"`+code.String()+`"`)
}

// TestHTTPGatewayCarriesLargeMessages: the HTTP/JSON gateway's calls into
// the gRPC server get the server's message limits, not a gRPC client's
// default of 4 MiB: a result of 5 MiB goes in and comes back out.
func TestHTTPGatewayCarriesLargeMessages(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	res, err := http.Post(b.url+"/ledger.v1.LedgerAdminService/CreateNamespace", "application/json",
		strings.NewReader(`{"name": "big", "settings": {"maxResultBytes": 16777216}, "reason": "large results"}`))
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusOK, res.StatusCode)
	b.ok(t, "Reserve", `{"namespace": "big", "key": "k", "owner": "w"}`)
	result := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 5<<20))
	b.ok(t, "Complete", fmt.Sprintf(`{"namespace": "big", "key": "k", "fencingToken": "1", "result": %q}`, result))
	answer := b.ok(t, "Lookup", `{"namespace": "big", "key": "k"}`)
	require.Equal(t, result, answer["entry"].(map[string]any)["result"])
}
