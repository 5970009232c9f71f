package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// RequestIDKey is the gRPC metadata key of a call's request id, in the
// request and in the response's headers. On the HTTP port it is the
// X-Request-Id header.
const RequestIDKey = "x-request-id"

// requestIDField is the name of the request id in the request log line
// and in the metadata of an error's ErrorInfo.
const requestIDField = "request_id"

// MaxRequestIDLength bounds a request id a caller sends. A longer one, or
// one with a character other than an ASCII letter, a digit or one of
// "-_.:/+=@", is replaced by one ledgerd makes, so that a caller cannot
// forge log lines or fill them.
const MaxRequestIDLength = 128

// validRequestID reports whether id, sent by a caller, is kept as it is.
func validRequestID(id string) bool {
	if id == "" || len(id) > MaxRequestIDLength {
		return false
	}
	for i := range len(id) {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '/', c == '+', c == '=', c == '@':
		default:
			return false
		}
	}
	return true
}

// newRequestID makes a request id: 16 random bytes in hex, the size of a
// trace id.
func newRequestID() string {
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	return hex.EncodeToString(id[:])
}

// requestIDOf returns the request id that a caller sent, if it is valid, or
// a new one.
func requestIDOf(sent string) string {
	if validRequestID(sent) {
		return sent
	}
	return newRequestID()
}

type requestIDKey struct{}

// requestID returns the request id of a call (see requestIDInterceptor),
// or "" outside one.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// requestIDInterceptor gives every call a request id: the caller's
// x-request-id if it is valid (see MaxRequestIDLength), or a new one. The
// id is sent back in the response headers, put in the ErrorInfo metadata
// of an error (as "request_id"), and left in the context for the request
// log line and the call's span (see requestLog). It is outside the
// interceptors that can fail a call, so that every error carries it.
func requestIDInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var sent string
	if values := metadata.ValueFromIncomingContext(ctx, RequestIDKey); len(values) > 0 {
		sent = values[0] // (ValueFromIncomingContext copies one value, not the whole metadata)
	}
	id := requestIDOf(sent)
	_ = grpc.SetHeader(ctx, metadata.MD{RequestIDKey: {id}}) // fails only once headers are sent
	resp, err := handler(context.WithValue(ctx, requestIDKey{}, id), req)
	if err != nil {
		err = withRequestID(err, id)
	}
	return resp, err
}

// withRequestID adds the request id to the metadata of err's ErrorInfo,
// keeping the other details as they are.
func withRequestID(err error, id string) error {
	st := status.Convert(err).Proto() // a copy
	for i, detail := range st.GetDetails() {
		info := new(errdetails.ErrorInfo)
		if !detail.MessageIs(info) || detail.UnmarshalTo(info) != nil {
			continue
		}
		if info.Metadata == nil {
			info.Metadata = make(map[string]string, 1)
		}
		info.Metadata[requestIDField] = id
		if withID, anyErr := anypb.New(info); anyErr == nil {
			st.Details[i] = withID
		}
		return status.FromProto(st).Err()
	}
	return err // not ledgerd's (every ledgerd error has an ErrorInfo): the headers carry the id
}

// httpRequestID gives every request to the HTTP port's RPC routes a
// request id, as requestIDInterceptor does for gRPC: the X-Request-Id
// header if it is valid, or a new one, set on the response at once (so
// that the answers the gateway never forwards, such as a 401 or a 413,
// carry it too) and forwarded to the gRPC call as x-request-id.
func httpRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestIDOf(r.Header.Get("X-Request-ID"))
		r.Header.Set("X-Request-ID", id)
		w.Header().Set("X-Request-ID", id)
		next.ServeHTTP(w, r)
	})
}
