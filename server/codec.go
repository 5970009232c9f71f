package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec lenientCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ledgerd/ledgerd/ledger"
)

// A request that protobuf cannot decode is bad input: a proto3 string
// field holding invalid UTF-8 (which protobuf refuses, and which no
// protobuf library sends, but any client can), or bytes that are not the
// wire format at all. The API answers bad input with INVALID_ARGUMENT
// naming the field. grpc-go, though, answers INTERNAL ("grpc: failed to
// unmarshal the received message") to any error of its codec, and writes
// that status before an interceptor or the handler runs; and protobuf-go
// has no option to decode a proto3 string without checking its UTF-8.
//
// So the server's codec (lenientCodec) does not fail such a request: it
// resets the message, marks it as undecodable with the problem (the field
// that holds invalid UTF-8, if that is why), and hands it on. The
// interceptors below answer a marked request with INVALID_ARGUMENT before
// credentials, handlers or the ledger look at it. The mark is an unknown
// field that begins with a random number drawn at start-up, so a client
// cannot forge it: to a message the client sent, that field is just an
// unknown field, ignored like any other.

// undecodableField is the field number of the mark: the largest valid
// one, which no ledgerd message uses.
const undecodableField = protowire.MaxValidNumber

// undecodableNonce begins every mark.
var undecodableNonce = rand.Text()

// lenientCodec is gRPC's proto codec, except that a message protobuf
// cannot decode is reset and marked instead of failing the call.
type lenientCodec struct {
	encoding.CodecV2 // gRPC's proto codec
}

func newLenientCodec() lenientCodec {
	return lenientCodec{CodecV2: encoding.GetCodecV2("proto")}
}

// Unmarshal decodes data into v as gRPC's proto codec does; if protobuf
// refuses data, v is reset and marked as undecodable, and the error is
// left to the interceptors.
func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	msg, ok := v.(proto.Message)
	if err == nil || !ok {
		return err
	}
	proto.Reset(msg)
	md := msg.ProtoReflect().Descriptor()
	problem := &ledger.ValidationError{Field: "request", Reason: fmt.Sprintf("is not a valid %s message: %v", md.FullName(), err)}
	if path, found := invalidUTF8Field(data.Materialize(), md, 0); found {
		problem = &ledger.ValidationError{Field: path, Reason: "must be valid UTF-8"}
	}
	markUndecodable(msg, problem)
	return nil
}

// maxWalkDepth bounds how deep invalidUTF8Field follows nested messages.
const maxWalkDepth = 32

// invalidUTF8Field returns the path ("key", "error.message", "metadata")
// of the first string field of the wire-format message b, of type md,
// that holds invalid UTF-8. It stops, finding nothing, where b is not
// well-formed.
func invalidUTF8Field(b []byte, md protoreflect.MessageDescriptor, depth int) (string, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return "", false
			}
			b = b[n:]
			continue
		}
		value, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		switch {
		case fd == nil:
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(value):
			return string(fd.Name()), true
		case fd.Kind() == protoreflect.MessageKind && depth < maxWalkDepth:
			inner, found := invalidUTF8Field(value, fd.Message(), depth+1)
			switch {
			case !found:
			case fd.IsMap(): // the key or the value of an entry
				return string(fd.Name()), true
			default:
				return string(fd.Name()) + "." + inner, true
			}
		}
	}
	return "", false
}

// markUndecodable records problem in the (reset) message msg.
func markUndecodable(msg proto.Message, problem *ledger.ValidationError) {
	payload := []byte(undecodableNonce)
	payload = protowire.AppendString(payload, problem.Field)
	payload = protowire.AppendString(payload, problem.Reason)
	mark := protowire.AppendTag(nil, undecodableField, protowire.BytesType)
	msg.ProtoReflect().SetUnknown(protowire.AppendBytes(mark, payload))
}

// undecodable returns the problem recorded in a message that the codec
// could not decode; ok is false for every other message.
func undecodable(v any) (problem *ledger.ValidationError, ok bool) {
	msg, isProto := v.(proto.Message)
	if !isProto {
		return nil, false
	}
	unknown := msg.ProtoReflect().GetUnknown()
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		if n < 0 {
			return nil, false
		}
		unknown = unknown[n:]
		n = protowire.ConsumeFieldValue(num, typ, unknown)
		if n < 0 {
			return nil, false
		}
		value := unknown[:n]
		unknown = unknown[n:]
		if num != undecodableField || typ != protowire.BytesType {
			continue
		}
		payload, _ := protowire.ConsumeBytes(value)
		rest, marked := bytes.CutPrefix(payload, []byte(undecodableNonce))
		if !marked {
			continue // a client's field of the same number
		}
		field, n := protowire.ConsumeString(rest)
		if n < 0 {
			return nil, false
		}
		reason, m := protowire.ConsumeString(rest[n:])
		if m < 0 {
			return nil, false
		}
		return &ledger.ValidationError{Field: field, Reason: reason}, true
	}
	return nil, false
}

// rejectUndecodable answers a unary request that the codec could not
// decode with INVALID_ARGUMENT.
func rejectUndecodable(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if problem, ok := undecodable(req); ok {
			return nil, toStatus(ctx, logger, problem)
		}
		return handler(ctx, req)
	}
}

// rejectUndecodableStream fails a stream's RecvMsg with INVALID_ARGUMENT
// when the codec could not decode the message (the health service's Watch,
// reflection).
func rejectUndecodableStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &checkedStream{ServerStream: ss, logger: logger})
	}
}

type checkedStream struct {
	grpc.ServerStream
	logger *slog.Logger
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if problem, ok := undecodable(m); ok {
		return toStatus(s.Context(), s.logger, problem)
	}
	return nil
}
