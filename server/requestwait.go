package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"
)

// requestWaits guards the time between a call's headers and its request
// message. gRPC gives every new stream a goroutine that waits for the
// message before any interceptor runs, so the deadline and auth
// interceptors cannot bound that wait: a client that opens streams and
// never sends their messages would hold goroutines for as long as it
// likes. requestWaits refuses, before a stream is created, a call that
// carries no credentials at all (with authentication on), bounds how long
// any stream may wait for its request message, and how many may wait at
// once.
type requestWaits struct {
	requireCredentials bool
	timeout            time.Duration
	slots              chan struct{} // one per stream waiting for its message
	waiting            atomic.Int64  // for tests and metrics: streams waiting now
}

func newRequestWaits(limits Limits, requireCredentials bool) *requestWaits {
	return &requestWaits{
		requireCredentials: requireCredentials,
		timeout:            limits.RequestReadTimeout,
		slots:              make(chan struct{}, limits.MaxPendingRequests),
	}
}

// arrivedKey is the context key of the func that a stream's first
// interceptor calls once the request message has arrived.
type arrivedKey struct{}

// tap runs in the connection's reader goroutine, before the stream and its
// goroutine exist (see grpc.InTapHandle): it must not block.
func (w *requestWaits) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if w.requireCredentials && !public(info.FullMethodName) && !carriesCredentials(ctx, info.Header) {
		return nil, withDetails(codes.Unauthenticated, ReasonUnauthenticated, "credentials required: send 'authorization: Bearer <token>' or a client certificate", nil)
	}
	select {
	case w.slots <- struct{}{}:
	default:
		return nil, withDetails(codes.Unavailable, ReasonUnavailable, "too many calls are waiting for their request message; retry", nil)
	}
	w.waiting.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	var once sync.Once
	release := func() {
		once.Do(func() {
			w.waiting.Add(-1)
			<-w.slots
		})
	}
	// The message has not arrived in time: end the stream, which fails
	// the wait for the message (the client sees CANCELLED).
	timer := time.AfterFunc(w.timeout, func() { release(); cancel() })
	// The stream ended first (the client cancelled it, the connection
	// closed): nothing waits any more.
	stopEnd := context.AfterFunc(ctx, func() { timer.Stop(); release() })
	arrived := func() {
		timer.Stop()
		stopEnd()
		release()
	}
	return context.WithValue(ctx, arrivedKey{}, arrived), nil
}

// messageArrived ends the wait of the stream of ctx.
func messageArrived(ctx context.Context) {
	if arrived, ok := ctx.Value(arrivedKey{}).(func()); ok {
		arrived()
	}
}

// unaryInterceptor is the outermost unary interceptor: gRPC calls it once
// the request message has been read.
func (w *requestWaits) unaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	messageArrived(ctx)
	return handler(ctx, req)
}

// streamInterceptor ends a stream's wait when its first message arrives
// (a streaming handler reads its messages itself).
func (w *requestWaits) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &firstMessageStream{ServerStream: ss})
}

type firstMessageStream struct {
	grpc.ServerStream
	arrived bool
}

func (s *firstMessageStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if !s.arrived {
		s.arrived = true
		messageArrived(s.Context())
	}
	return err
}

// carriesCredentials reports whether a call presents credentials of some
// kind, valid or not: an authorization header, a verified client
// certificate, or the certificate principal the HTTP gateway forwards.
// Whether they are valid is for Auth to decide, once the message is in.
func carriesCredentials(ctx context.Context, header metadata.MD) bool {
	if len(header.Get("authorization")) > 0 {
		return true
	}
	p, _ := peer.FromContext(ctx)
	if p == nil {
		return false
	}
	switch info := p.AuthInfo.(type) {
	case certificateAuthInfo:
		return len(info.State.VerifiedChains) > 0
	case credentials.TLSInfo:
		return len(info.State.VerifiedChains) > 0
	case gatewayAuthInfo:
		return len(header.Get(certificatePrincipalKey)) > 0 || len(header.Get(certificateRefusalKey)) > 0
	}
	return false
}
