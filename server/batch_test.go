package server_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// TestBatchRPCs drives the three batch RPCs through gRPC: per-item answers
// in request order, per-item errors as the singleton calls' statuses.
func TestBatchRPCs(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)

	reserved, err := b.client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "nb", Owner: "w",
		Items: []*ledgerv1.ReserveBatchItem{{Key: "a"}, {Key: "b", Metadata: map[string]string{"n": "1"}}, {Key: ""}, {Key: "a"}}})
	require.NoError(t, err)
	require.Len(t, reserved.GetResults(), 4)
	tokenA := reserved.GetResults()[0].GetReserved().GetAcquired().GetFencingToken()
	tokenB := reserved.GetResults()[1].GetReserved().GetAcquired().GetFencingToken()
	require.Equal(t, int64(1), tokenA)
	require.Equal(t, int64(1), tokenB)
	bad := reserved.GetResults()[2].GetError()
	require.Equal(t, int32(codes.InvalidArgument), bad.GetCode())
	require.Equal(t, server.ReasonInvalidArgument, bad.GetReason())
	require.Equal(t, "items[2].key", bad.GetField())
	require.Equal(t, "items[3].key", reserved.GetResults()[3].GetError().GetField())

	completed, err := b.client.CompleteBatch(ctx, &ledgerv1.CompleteBatchRequest{Namespace: "nb",
		Items: []*ledgerv1.CompleteBatchItem{{Key: "a", FencingToken: tokenA, Result: []byte("ra")}, {Key: "b", FencingToken: tokenB + 1}}})
	require.NoError(t, err)
	require.False(t, completed.GetResults()[0].GetCompleted().GetAlreadyCompleted())
	lost := completed.GetResults()[1].GetError()
	require.Equal(t, int32(codes.Aborted), lost.GetCode())
	require.Equal(t, server.ReasonLeaseLost, lost.GetReason())

	looked, err := b.client.LookupBatch(ctx, &ledgerv1.LookupBatchRequest{Namespace: "nb", Keys: []string{"a", "b", "c", "a"}})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_COMPLETED, looked.GetResults()[0].GetEntry().GetState())
	require.Equal(t, []byte("ra"), looked.GetResults()[0].GetEntry().GetResult())
	require.Equal(t, ledgerv1.State_STATE_LEASED, looked.GetResults()[1].GetEntry().GetState())
	require.Equal(t, map[string]string{"n": "1"}, looked.GetResults()[1].GetEntry().GetMetadata())
	require.Equal(t, server.ReasonNotFound, looked.GetResults()[2].GetError().GetReason())
	repeated := looked.GetResults()[3].GetError()
	require.Equal(t, int32(codes.InvalidArgument), repeated.GetCode(), "a repeated key is answered once")
	require.Equal(t, "keys[3]", repeated.GetField())
	require.Nil(t, looked.GetResults()[3].GetEntry())

	// The whole call fails for what all items share.
	_, err = b.client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "nb", Items: []*ledgerv1.ReserveBatchItem{{Key: "x"}}})
	requireReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	_, err = b.client.LookupBatch(ctx, &ledgerv1.LookupBatchRequest{Namespace: "nb"})
	requireReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
}

// TestBatchResponsesStayUnderTheSendLimit: answers that do not fit in the
// response become RESPONSE_TOO_LARGE items, and the response is delivered.
func TestBatchResponsesStayUnderTheSendLimit(t *testing.T) {
	t.Parallel()
	bundle := ledgertest.Store(t, ledger.Config{})
	srv := serveMem(t, bundle, server.Config{Limits: server.Limits{MaxSendMsgBytes: 200 << 10}})
	ctx := t.Context()
	big := bytes.Repeat([]byte("x"), 100<<10)
	for _, key := range []string{"a", "b"} {
		r, err := srv.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "nb", Key: key, Owner: "w"})
		require.NoError(t, err)
		_, err = srv.client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "nb", Key: key, FencingToken: r.GetAcquired().GetFencingToken(), Result: big})
		require.NoError(t, err)
	}
	replays, err := srv.client.ReserveBatch(ctx, &ledgerv1.ReserveBatchRequest{Namespace: "nb", Owner: "v",
		Items: []*ledgerv1.ReserveBatchItem{{Key: "a"}, {Key: "b"}, {Key: "c"}}})
	require.NoError(t, err)
	require.Equal(t, big, replays.GetResults()[0].GetReserved().GetCompleted().GetResult())
	require.Equal(t, server.ReasonResponseTooLarge, replays.GetResults()[1].GetError().GetReason())
	require.Equal(t, int32(codes.ResourceExhausted), replays.GetResults()[1].GetError().GetCode())
	require.NotNil(t, replays.GetResults()[2].GetReserved().GetAcquired(), "small answers still fit")

	looked, err := srv.client.LookupBatch(ctx, &ledgerv1.LookupBatchRequest{Namespace: "nb", Keys: []string{"a", "b"}})
	require.NoError(t, err)
	require.Equal(t, big, looked.GetResults()[0].GetEntry().GetResult())
	require.Equal(t, server.ReasonResponseTooLarge, looked.GetResults()[1].GetError().GetReason())
}
