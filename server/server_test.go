package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type testBundle struct {
	client ledgerv1.LedgerServiceClient
	conn   *grpc.ClientConn
	ledger ledgertest.Bundle
}

func setup(t *testing.T) (context.Context, testBundle) {
	t.Helper()
	conn, b := ledgertest.Server(t, ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 10 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx, testBundle{client: ledgerv1.NewLedgerServiceClient(conn), conn: conn, ledger: b}
}

// requireReason checks a status error's code and its ErrorInfo reason.
func requireReason(t *testing.T, err error, code codes.Code, reason string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	require.Equal(t, code, st.Code(), st.Message())
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	require.NotNil(t, info, "no ErrorInfo in %v", st.Details())
	require.Equal(t, "ledgerd", info.GetDomain())
	require.Equal(t, reason, info.GetReason())
	return st
}

// TestRoundTrip drives the whole life of a key through gRPC.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)

	res, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{
		Namespace: "etl", Key: "file-1", Owner: "w1", LeaseTtl: durationpb.New(time.Minute),
		Fingerprint: []byte{1, 2}, Metadata: map[string]string{"run": "7"},
	})
	require.NoError(t, err)
	acquired := res.GetAcquired()
	require.NotNil(t, acquired, "%v", res)
	require.Equal(t, int64(1), acquired.GetFencingToken())
	require.Equal(t, int32(1), acquired.GetAttempt())
	require.Equal(t, time.Minute, acquired.GetLeaseTtl().AsDuration())
	require.False(t, acquired.GetTakeover())

	// Another owner is told who holds it.
	res, err = b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "etl", Key: "file-1", Owner: "w2", Fingerprint: []byte{1, 2}})
	require.NoError(t, err)
	require.Equal(t, "w1", res.GetInProgress().GetOwner())
	require.Equal(t, acquired.GetLeaseExpiresAt().AsTime(), res.GetInProgress().GetLeaseExpiresAt().AsTime())
	require.Equal(t, 5*time.Second, res.GetInProgress().GetRetryAfter().AsDuration(), "capped at 5s for a 1m lease")

	hb, err := b.client.Heartbeat(ctx, &ledgerv1.HeartbeatRequest{Namespace: "etl", Key: "file-1", FencingToken: 1, Checkpoint: []byte("row 10")})
	require.NoError(t, err)
	require.True(t, hb.GetLeaseExpiresAt().AsTime().After(time.Now().Add(20*time.Second)), "default 30s TTL")

	done, err := b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "etl", Key: "file-1", FencingToken: 1, Result: []byte("ok")})
	require.NoError(t, err)
	require.False(t, done.GetAlreadyCompleted())

	res, err = b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "etl", Key: "file-1", Owner: "w2", Fingerprint: []byte{1, 2}})
	require.NoError(t, err)
	require.Equal(t, []byte("ok"), res.GetCompleted().GetResult())
	require.Equal(t, int64(1), res.GetCompleted().GetFencingToken())
	require.Equal(t, "w1", res.GetCompleted().GetOwner())
	require.Equal(t, done.GetCompletedAt().AsTime(), res.GetCompleted().GetCompletedAt().AsTime())

	got, err := b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "etl", Key: "file-1"})
	require.NoError(t, err)
	e := got.GetEntry()
	require.Equal(t, ledgerv1.State_STATE_COMPLETED, e.GetState())
	require.Equal(t, "w1", e.GetOwner())
	require.Equal(t, int64(1), e.GetFencingToken())
	require.Equal(t, []byte("ok"), e.GetResult())
	require.Equal(t, []byte("row 10"), e.GetCheckpoint())
	require.Equal(t, []byte{1, 2}, e.GetFingerprint())
	require.Equal(t, map[string]string{"run": "7"}, e.GetMetadata())
	require.Equal(t, int32(1), e.GetAttempts())
	require.Nil(t, e.GetLeaseExpiresAt())
	require.NotNil(t, e.GetFinishedAt())
	require.NotNil(t, e.GetCreatedAt())

	var events int
	require.NoError(t, b.ledger.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'etl' AND key = 'file-1'`).Scan(&events))
	require.Equal(t, 3, events, "reserved, heartbeat (sampled), completed")
}

func TestFailAndRelease(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	reserve := func(key string) int64 {
		res, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: key, Owner: "w"})
		require.NoError(t, err)
		require.NotNil(t, res.GetAcquired(), "%v", res)
		return res.GetAcquired().GetFencingToken()
	}

	token := reserve("retry-me")
	f, err := b.client.Fail(ctx, &ledgerv1.FailRequest{Namespace: "ns", Key: "retry-me", FencingToken: token, Retryable: true,
		Error: &ledgerv1.WorkError{Code: "timeout", Message: "slow upstream"}})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_RELEASED, f.GetState())
	require.Equal(t, token+1, reserve("retry-me"))

	token = reserve("give-up")
	f, err = b.client.Fail(ctx, &ledgerv1.FailRequest{Namespace: "ns", Key: "give-up", FencingToken: token,
		Error: &ledgerv1.WorkError{Code: "bad", Message: "malformed"}})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_FAILED, f.GetState())
	res, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "give-up", Owner: "w2"})
	require.NoError(t, err)
	require.Equal(t, "malformed", res.GetFailed().GetError().GetMessage())
	require.Equal(t, "bad", res.GetFailed().GetError().GetCode())
	require.Equal(t, int32(1), res.GetFailed().GetAttempts())

	token = reserve("let-go")
	rel, err := b.client.Release(ctx, &ledgerv1.ReleaseRequest{Namespace: "ns", Key: "let-go", FencingToken: token})
	require.NoError(t, err)
	require.False(t, rel.GetAlreadyReleased())
	rel, err = b.client.Release(ctx, &ledgerv1.ReleaseRequest{Namespace: "ns", Key: "let-go", FencingToken: token})
	require.NoError(t, err)
	require.True(t, rel.GetAlreadyReleased())
}

// TestErrorModel checks each error's code, ErrorInfo reason and, for bad
// input, the BadRequest field violation.
func TestErrorModel(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)

	_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: string(make([]byte, 513)), Owner: "w"})
	st := requireReason(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	require.Contains(t, st.Message(), "key")
	var violations []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			violations = br.GetFieldViolations()
		}
	}
	require.Len(t, violations, 1)
	require.Equal(t, "key", violations[0].GetField())
	require.Equal(t, "must be at most 512 bytes, got 513", violations[0].GetDescription())

	_, err = b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", LeaseTtl: &durationpb.Duration{Seconds: 1, Nanos: -5}})
	st = requireReason(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	require.Contains(t, st.Message(), "lease_ttl")

	res, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", Fingerprint: []byte("a"), LeaseTtl: durationpb.New(20 * time.Millisecond)})
	require.NoError(t, err)
	token := res.GetAcquired().GetFencingToken()

	_, err = b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w2", Fingerprint: []byte("b")})
	requireReason(t, err, codes.FailedPrecondition, "FINGERPRINT_MISMATCH")

	// Let the lease run out and take the key over: the old token is stale.
	require.Eventually(t, func() bool {
		got, err := b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
		require.NoError(t, err)
		return got.GetEntry().GetLeaseExpired()
	}, time.Minute, 10*time.Millisecond)
	res, err = b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w2", Fingerprint: []byte("a")})
	require.NoError(t, err)
	require.Equal(t, token+1, res.GetAcquired().GetFencingToken())
	require.True(t, res.GetAcquired().GetTakeover())
	require.Equal(t, "w", res.GetAcquired().GetPreviousOwner())

	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: token, Result: []byte("zombie")})
	requireReason(t, err, codes.Aborted, "LEASE_LOST")
	_, err = b.client.Heartbeat(ctx, &ledgerv1.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: token})
	requireReason(t, err, codes.Aborted, "LEASE_LOST")

	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: token + 1, Result: []byte("one")})
	require.NoError(t, err)
	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: token + 1, Result: []byte("two")})
	requireReason(t, err, codes.FailedPrecondition, "RESULT_CONFLICT")

	_, err = b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "missing"})
	requireReason(t, err, codes.NotFound, "NOT_FOUND")

	b.ledger.Pool.Close() // the database goes away
	_, err = b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	st = requireReason(t, err, codes.Unavailable, "UNAVAILABLE")
	require.NotContains(t, st.Message(), "pool", "no driver internals in messages")
}

func TestHealthAndReflection(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	health := healthpb.NewHealthClient(b.conn)
	for _, service := range []string{"", "ledger.v1.LedgerService"} {
		res, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, res.GetStatus())
	}

	stream, err := reflectionpb.NewServerReflectionClient(b.conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	res, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	require.Contains(t, names, "ledger.v1.LedgerService")
	require.Contains(t, names, "grpc.health.v1.Health")
	require.NoError(t, stream.CloseSend())
}

// TestReserveWaits: a Reserve with wait_timeout is held until the holder
// completes, then replays its result; a negative wait is refused.
func TestReserveWaits(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	require.Eventually(t, b.ledger.Store.Listening, time.Minute, 5*time.Millisecond)

	_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", WaitTimeout: durationpb.New(-time.Second)})
	st := requireReason(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	require.Contains(t, st.Message(), "wait_timeout")

	res, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTtl: durationpb.New(time.Hour)})
	require.NoError(t, err)
	token := res.GetAcquired().GetFencingToken()

	type waited struct {
		res *ledgerv1.ReserveResponse
		err error
	}
	answer := make(chan waited, 1)
	go func() {
		res, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: durationpb.New(45 * time.Second)})
		answer <- waited{res, err}
	}()
	require.Eventually(t, func() bool { return b.ledger.Store.Waiters() == 1 }, time.Minute, 5*time.Millisecond)
	_, err = b.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: token, Result: []byte("r")})
	require.NoError(t, err)
	select {
	case w := <-answer:
		require.NoError(t, w.err)
		require.Equal(t, []byte("r"), w.res.GetCompleted().GetResult())
	case <-time.After(30 * time.Second): // well before the wait of 45s runs out
		t.Fatal("the waiting Reserve was not woken by the Complete")
	}
}
