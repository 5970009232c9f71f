package server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// The fuzz targets call every unary RPC of the API (and the health check)
// of an in-memory ledgerd over a real database, with random wire bytes
// (FuzzRawRequests) and with requests built from random field values
// (FuzzRequests), and check what bad input must never do:
//   - panic, or make the server log an error (an INTERNAL);
//   - end in a code other than OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
//     NOT_FOUND, FAILED_PRECONDITION, ABORTED or ALREADY_EXISTS (no auth
//     here, so no PERMISSION_DENIED);
//   - change the database when it is refused as INVALID_ARGUMENT or
//     RESOURCE_EXHAUSTED. (A valid random request may change it: a random
//     Reserve may acquire a key. A call refused for a stale token or a
//     fingerprint mismatch records the refusal in the audit trail.)
//
// `make test` runs each briefly; `make fuzz` for FUZZTIME.

// fuzzServer is the ledgerd a fuzzing process calls: one per process.
type fuzzServer struct {
	memServer
	alarms  *alarmHandler
	methods []fuzzMethod
	token   string // a platform admin's
}

// fuzzMethod is a unary RPC and its request type.
type fuzzMethod struct {
	fullName string
	request  protoreflect.MessageType
}

func startFuzzServer(f *testing.F) *fuzzServer {
	f.Helper()
	// Waits are capped short, so that a random waiting Reserve does not
	// hold the fuzzer up.
	b := ledgertest.Store(f, ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 10 * time.Millisecond, MaxWait: 20 * time.Millisecond}})
	alarms := &alarmHandler{}
	// Authenticated as a platform admin, so that every RPC gets as far as
	// its input checks (without authentication, the token and role RPCs
	// are refused outright).
	_, token, err := b.Store.Bootstrap(context.Background(), "fuzzer")
	require.NoError(f, err)
	auth := server.NewAuth(b.Store, server.AuthConfig{Logger: slog.New(alarms)})
	require.NoError(f, auth.Load(context.Background()))
	s := serveMem(f, b, server.Config{Logger: slog.New(alarms), Auth: auth})
	return &fuzzServer{memServer: s, alarms: alarms, methods: unaryMethods(f), token: token}
}

// unaryMethods lists the unary RPCs of the API and the health check, in
// the order of their descriptors.
func unaryMethods(tb testing.TB) []fuzzMethod {
	tb.Helper()
	var methods []fuzzMethod
	for _, service := range []string{
		ledgerv1.LedgerService_ServiceDesc.ServiceName,
		ledgerv1.LedgerAdminService_ServiceDesc.ServiceName,
		healthpb.Health_ServiceDesc.ServiceName,
	} {
		descriptor, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
		require.NoError(tb, err)
		rpcs := descriptor.(protoreflect.ServiceDescriptor).Methods()
		for i := range rpcs.Len() {
			rpc := rpcs.Get(i)
			if rpc.IsStreamingClient() || rpc.IsStreamingServer() {
				continue
			}
			request, err := protoregistry.GlobalTypes.FindMessageByName(rpc.Input().FullName())
			require.NoError(tb, err)
			methods = append(methods, fuzzMethod{fullName: "/" + service + "/" + string(rpc.Name()), request: request})
		}
	}
	return methods
}

// call sends payload to the method-th RPC and checks the outcome (see the
// top of this file).
func (s *fuzzServer) call(t *testing.T, method uint8, payload []byte) {
	t.Helper()
	m := s.methods[int(method)%len(s.methods)]
	before := dbState(t, s.ledger.Pool)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := invokeRaw(as(ctx, s.token), s.conn, m.fullName, payload)
	if alarms := s.alarms.take(); len(alarms) > 0 {
		t.Fatalf("%s (%v): the server logged errors:\n%s", m.fullName, err, strings.Join(alarms, "\n"))
	}
	switch status.Code(err) {
	case codes.OK, codes.NotFound, codes.FailedPrecondition, codes.Aborted, codes.AlreadyExists:
	case codes.InvalidArgument, codes.ResourceExhausted:
		if after := dbState(t, s.ledger.Pool); after != before {
			t.Fatalf("%s refused (%v) but changed the database:\nbefore: %s\nafter:  %s", m.fullName, err, before, after)
		}
	default:
		t.Fatalf("%s: unexpected answer to bad input: %v", m.fullName, err)
	}
}

// FuzzRawRequests sends random bytes as the request of every RPC.
func FuzzRawRequests(f *testing.F) {
	s := startFuzzServer(f)
	for i, m := range s.methods {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{0xff, 0xff, 0xff, 0xff})
		f.Add(uint8(i), laxMarshal(fuzzRequest(m.request, sampleInput)))
		f.Add(uint8(i), laxMarshal(fuzzRequest(m.request, fuzzInput{namespace: "ns", key: "\xff\xfe", owner: "w", text: "\xc0"})))
	}
	f.Fuzz(func(t *testing.T, method uint8, payload []byte) {
		s.call(t, method, payload)
	})
}

// FuzzRequests sends requests built from random field values (strings
// that are not UTF-8 included, sent as they are) to every RPC.
func FuzzRequests(f *testing.F) {
	s := startFuzzServer(f)
	for i := range s.methods {
		in := sampleInput
		f.Add(uint8(i), in.namespace, in.key, in.owner, in.token, in.payload, in.number, in.text)
		f.Add(uint8(i), "ns", "k\x00", "w", int64(0), []byte{}, int64(-1), "")
		f.Add(uint8(i), "ns", strings.Repeat("k", 600), "w\xff", int64(2), make([]byte, 1<<10), int64(1<<40), "\xed\xa0\x80")
		f.Add(uint8(i), "ns", "k", "w", int64(math.MaxInt64), []byte("r"), int64(math.MaxInt64), "")
		f.Add(uint8(i), "ns", "k", "w", int64(math.MinInt64), []byte("r"), int64(math.MinInt64), "")
		// Page tokens are base64 of JSON: one with a NUL in its key.
		f.Add(uint8(i), "ns", "k", "w", int64(1), []byte("r"), int64(10), base64.RawURLEncoding.EncodeToString([]byte(`{"k":"\u0000","i":1,"t":"2001-01-01T00:00:00Z"}`)))
	}
	f.Fuzz(func(t *testing.T, method uint8, namespace, key, owner string, token int64, payload []byte, number int64, text string) {
		m := s.methods[int(method)%len(s.methods)]
		in := fuzzInput{namespace: namespace, key: key, owner: owner, token: token, payload: payload, number: number, text: text}
		s.call(t, method, laxMarshal(fuzzRequest(m.request, in)))
	})
}

// fuzzInput are the values a request is built from.
type fuzzInput struct {
	namespace, key, owner string
	token                 int64
	payload               []byte
	number                int64
	text                  string
}

// sampleInput builds valid requests: a Reserve of it acquires the key, a
// Complete then completes it.
var sampleInput = fuzzInput{namespace: "ns", key: "k", owner: "w", token: 1, payload: []byte("r"), number: 1000, text: "why"}

// fuzzRequest returns a request of type mt with every field set from in:
// namespace and name fields from in.namespace, key fields from in.key,
// owner and principal from in.owner, other strings from in.text, bytes
// from in.payload, fencing tokens from in.token, numbers, enums and
// durations (milliseconds) from in.number. It works for any request, so
// new RPCs are fuzzed without changing this file.
func fuzzRequest(mt protoreflect.MessageType, in fuzzInput) protoreflect.Message {
	msg := mt.New()
	fill(msg, in, 0)
	return msg
}

func fill(msg protoreflect.Message, in fuzzInput, depth int) {
	fields := msg.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind {
				entries := msg.Mutable(fd).Map()
				entries.Set(protoreflect.ValueOfString(in.owner).MapKey(), protoreflect.ValueOfString(in.text))
			}
		case fd.IsList():
			if v, ok := fieldValue(msg, fd, in, depth); ok {
				msg.Mutable(fd).List().Append(v)
			}
		default:
			if v, ok := fieldValue(msg, fd, in, depth); ok {
				msg.Set(fd, v)
			}
		}
	}
}

func fieldValue(msg protoreflect.Message, fd protoreflect.FieldDescriptor, in fuzzInput, depth int) (protoreflect.Value, bool) {
	name := string(fd.Name())
	switch fd.Kind() {
	case protoreflect.StringKind:
		switch {
		case name == "namespace" || name == "name":
			return protoreflect.ValueOfString(in.namespace), true
		case strings.HasPrefix(name, "key"):
			return protoreflect.ValueOfString(in.key), true
		case name == "owner" || name == "principal":
			return protoreflect.ValueOfString(in.owner), true
		}
		return protoreflect.ValueOfString(in.text), true
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(in.payload), true
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(in.number%2 != 0), true
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(in.number % 16)), true
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(in.number)), true
	case protoreflect.Int64Kind:
		if name == "fencing_token" {
			return protoreflect.ValueOfInt64(in.token), true
		}
		return protoreflect.ValueOfInt64(in.number), true
	case protoreflect.MessageKind:
		switch fd.Message().FullName() {
		case "google.protobuf.Duration":
			return protoreflect.ValueOfMessage((&durationpb.Duration{Seconds: in.number / 1000, Nanos: int32(in.number%1000) * 1e6}).ProtoReflect()), true
		case "google.protobuf.Timestamp":
			return protoreflect.ValueOfMessage((&timestamppb.Timestamp{Seconds: in.number}).ProtoReflect()), true
		}
		if depth >= 3 {
			return protoreflect.Value{}, false
		}
		var inner protoreflect.Message
		if fd.IsList() { // a repeated message: the batch RPCs' items
			inner = msg.Mutable(fd).List().NewElement().Message()
		} else {
			inner = msg.NewField(fd).Message()
		}
		fill(inner, in, depth+1)
		return protoreflect.ValueOfMessage(inner), true
	default: // kinds the requests do not use
		return protoreflect.Value{}, false
	}
}

// laxMarshal encodes msg as proto.Marshal would, except that it sends
// strings that are not UTF-8 as they are (proto.Marshal refuses them, but
// a client of another make can send them). It knows the field kinds that
// requests use.
func laxMarshal(msg protoreflect.Message) []byte {
	var wire []byte
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			v.Map().Range(func(key protoreflect.MapKey, value protoreflect.Value) bool {
				entry := appendField(nil, fd.MapKey(), key.Value())
				entry = appendField(entry, fd.MapValue(), value)
				wire = protowire.AppendTag(wire, fd.Number(), protowire.BytesType)
				wire = protowire.AppendBytes(wire, entry)
				return true
			})
		case fd.IsList():
			for i := range v.List().Len() {
				wire = appendField(wire, fd, v.List().Get(i))
			}
		default:
			wire = appendField(wire, fd, v)
		}
		return true
	})
	return append(wire, msg.GetUnknown()...)
}

func appendField(wire []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protowire.AppendString(protowire.AppendTag(wire, fd.Number(), protowire.BytesType), v.String())
	case protoreflect.BytesKind:
		return protowire.AppendBytes(protowire.AppendTag(wire, fd.Number(), protowire.BytesType), v.Bytes())
	case protoreflect.MessageKind:
		return protowire.AppendBytes(protowire.AppendTag(wire, fd.Number(), protowire.BytesType), laxMarshal(v.Message()))
	case protoreflect.BoolKind:
		return protowire.AppendVarint(protowire.AppendTag(wire, fd.Number(), protowire.VarintType), protowire.EncodeBool(v.Bool()))
	case protoreflect.EnumKind:
		return protowire.AppendVarint(protowire.AppendTag(wire, fd.Number(), protowire.VarintType), uint64(int64(v.Enum())))
	case protoreflect.Int32Kind, protoreflect.Int64Kind:
		return protowire.AppendVarint(protowire.AppendTag(wire, fd.Number(), protowire.VarintType), uint64(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return protowire.AppendVarint(protowire.AppendTag(wire, fd.Number(), protowire.VarintType), v.Uint())
	default: // kinds the requests do not use: below
	}
	panic(fmt.Sprintf("laxMarshal: field %s of kind %s", fd.FullName(), fd.Kind()))
}

// alarmHandler is a slog.Handler that keeps the records at ERROR and
// above (a panic, an internal error), and drops the rest.
type alarmHandler struct {
	mu     sync.Mutex
	alarms []string
}

func (h *alarmHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelError
}

func (h *alarmHandler) Handle(_ context.Context, r slog.Record) error {
	var line strings.Builder
	line.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&line, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.alarms = append(h.alarms, line.String())
	return nil
}

func (h *alarmHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *alarmHandler) WithGroup(string) slog.Handler      { return h }

// take returns the records kept since the last take.
func (h *alarmHandler) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	alarms := h.alarms
	h.alarms = nil
	return alarms
}
