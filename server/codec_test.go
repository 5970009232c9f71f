package server_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// placeholder marks, in a request built by the test, the string that
// withInvalidUTF8 turns into invalid UTF-8 of the same length.
const placeholder = "@@@@"

// withInvalidUTF8 returns msg's wire bytes with the placeholder replaced by
// bytes that are not UTF-8, as a client can send (protobuf libraries
// refuse to).
func withInvalidUTF8(tb testing.TB, msg proto.Message) []byte {
	tb.Helper()
	wire, err := proto.Marshal(msg)
	require.NoError(tb, err)
	require.Equal(tb, 1, bytes.Count(wire, []byte(placeholder)), "one placeholder in %v", msg)
	return bytes.Replace(wire, []byte(placeholder), []byte("\xff\xfe\x00\xc0"), 1)
}

// requireBadField checks an INVALID_ARGUMENT that names field, in the
// message and in a BadRequest.
func requireBadField(tb testing.TB, err error, field, message string) {
	tb.Helper()
	st := requireReason(tb.(*testing.T), err, codes.InvalidArgument, server.ReasonInvalidArgument)
	require.True(tb, strings.HasPrefix(st.Message(), message), "message %q, want it to begin with %q", st.Message(), message)
	var violations []*errdetails.BadRequest_FieldViolation
	for _, detail := range st.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			violations = bad.GetFieldViolations()
		}
	}
	require.Len(tb, violations, 1, "%v", st.Details())
	require.Equal(tb, field, violations[0].GetField())
}

// TestUndecodableRequestsAreInvalidArgument: a request that protobuf
// refuses (a string that is not UTF-8, bytes that are not protobuf) is
// INVALID_ARGUMENT naming the field, not INTERNAL, and changes nothing.
func TestUndecodableRequestsAreInvalidArgument(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := serveMem(t, ledgertest.Store(t, ledger.Config{}), server.Config{})
	_, err := s.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	valid, err := proto.Marshal(&ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.NoError(t, err)

	for _, tc := range []struct {
		name, method string
		payload      []byte
		field, msg   string
	}{
		{"key", ledgerv1.LedgerService_Reserve_FullMethodName,
			withInvalidUTF8(t, &ledgerv1.ReserveRequest{Namespace: "ns", Key: placeholder, Owner: "w"}),
			"key", "invalid key: must be valid UTF-8"},
		{"namespace", ledgerv1.LedgerService_Reserve_FullMethodName,
			withInvalidUTF8(t, &ledgerv1.ReserveRequest{Namespace: placeholder, Key: "k", Owner: "w"}),
			"namespace", "invalid namespace: must be valid UTF-8"},
		{"owner", ledgerv1.LedgerService_Reserve_FullMethodName,
			withInvalidUTF8(t, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: placeholder}),
			"owner", "invalid owner: must be valid UTF-8"},
		{"metadata value", ledgerv1.LedgerService_Reserve_FullMethodName,
			withInvalidUTF8(t, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", Metadata: map[string]string{"run": placeholder}}),
			"metadata", "invalid metadata: must be valid UTF-8"},
		{"metadata key", ledgerv1.LedgerService_Reserve_FullMethodName,
			withInvalidUTF8(t, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", Metadata: map[string]string{placeholder: "7"}}),
			"metadata", "invalid metadata: must be valid UTF-8"},
		{"nested", ledgerv1.LedgerService_Fail_FullMethodName,
			withInvalidUTF8(t, &ledgerv1.FailRequest{Namespace: "ns", Key: "k", FencingToken: 1, Error: &ledgerv1.WorkError{Code: "E", Message: placeholder}}),
			"error.message", "invalid error.message: must be valid UTF-8"},
		{"admin", ledgerv1.LedgerAdminService_ListEntries_FullMethodName,
			withInvalidUTF8(t, &ledgerv1.ListEntriesRequest{Namespace: "ns", Owner: placeholder}),
			"owner", "invalid owner: must be valid UTF-8"},
		{"not protobuf", ledgerv1.LedgerService_Complete_FullMethodName,
			[]byte{0xff, 0xff, 0xff, 0xff},
			"request", "invalid request: is not a valid ledger.v1.CompleteRequest message"},
		{"truncated", ledgerv1.LedgerService_Lookup_FullMethodName,
			valid[:len(valid)-1],
			"request", "invalid request: is not a valid ledger.v1.LookupRequest message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := dbState(t, s.ledger.Pool)
			err := invokeRaw(ctx, s.conn, tc.method, tc.payload)
			requireBadField(t, err, tc.field, tc.msg)
			require.Equal(t, before, dbState(t, s.ledger.Pool))
		})
	}
	require.True(t, loggedCode(s.log, codes.InvalidArgument), "the request log records the refusals")
	require.NotContains(t, s.log.String(), "internal error")
}

// TestTheMarkCannotBeForged: a client that sends the field number the codec
// marks undecodable requests with is served as usual (the field is
// unknown to it, and ignored).
func TestTheMarkCannotBeForged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := serveMem(t, ledgertest.Store(t, ledger.Config{}), server.Config{})
	request, err := proto.Marshal(&ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.NoError(t, err)
	for _, forged := range [][]byte{
		[]byte("anything"),
		protowire.AppendString(protowire.AppendString(nil, "key"), "must be valid UTF-8"),
	} {
		payload := protowire.AppendTag(request, protowire.MaxValidNumber, protowire.BytesType)
		payload = protowire.AppendBytes(payload, forged)
		err := invokeRaw(ctx, s.conn, ledgerv1.LedgerService_Lookup_FullMethodName, payload)
		requireReason(t, err, codes.NotFound, server.ReasonNotFound)
	}
}

// TestUndecodableHealthChecks: the standard services get the same answer,
// a stream (Watch) on its first message.
func TestUndecodableHealthChecks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := serveMem(t, ledgertest.Store(t, ledger.Config{}), server.Config{})
	request := withInvalidUTF8(t, &healthpb.HealthCheckRequest{Service: placeholder})

	err := invokeRaw(ctx, s.conn, healthpb.Health_Check_FullMethodName, request)
	requireBadField(t, err, "service", "invalid service: must be valid UTF-8")

	stream, err := s.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, healthpb.Health_Watch_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(request))
	require.NoError(t, stream.CloseSend())
	var reply []byte
	requireBadField(t, stream.RecvMsg(&reply), "service", "invalid service: must be valid UTF-8")
}

// TestHTTPInvalidUTF8: JSON cannot carry invalid UTF-8 either: raw bytes
// or an unpaired surrogate escape (\udc80) in a string are refused by the
// gateway's JSON decoder with INVALID_ARGUMENT (HTTP 400), before the gRPC
// server sees the call.
func TestHTTPInvalidUTF8(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	for _, body := range []string{
		"{\"namespace\":\"ns\",\"key\":\"\xff\xfe\",\"owner\":\"w\"}",
		`{"namespace":"ns","key":"\udc80","owner":"w"}`,
		`{"namespace":"ns","key":"k\ud800x","owner":"w"}`,
	} {
		code, answer := b.call(t, "Reserve", body)
		requireHTTPError(t, http.StatusBadRequest, float64(codes.InvalidArgument), server.ReasonInvalidArgument, code, answer)
	}
	var entries int
	require.NoError(t, b.ledger.Pool.QueryRow(context.Background(), "SELECT count(*) FROM entries").Scan(&entries))
	require.Zero(t, entries)
}
