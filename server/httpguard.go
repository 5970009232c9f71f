package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// rpcGuard stands in front of the HTTP/JSON gateway and refuses, before
// a byte of the body is read, what the gateway would read in vain or
// should not read at all: headers larger than the gRPC server accepts
// (431), a body that is not application/json (415), a body larger than
// the gRPC request limit allows (413), and, with authentication on, a
// caller without valid credentials (401). Authorization stays where the
// gRPC side does it, in the Auth interceptor, since it needs the
// request's namespace: one path for both ports.
type rpcGuard struct {
	next    http.Handler
	mux     *runtime.ServeMux // for the gateway's error shape
	marshal runtime.Marshaler
	auth    *Auth // nil: no authentication
	cfg     HTTPConfig
	forward func(context.Context, *http.Request) metadata.MD // the gateway's (see forwardCaller)
}

func (g *rpcGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		g.next.ServeHTTP(w, r) // the gateway answers 405 (or 404) without a body to read
		return
	}
	if size := headerBytes(r); size > g.cfg.MaxHeaderBytes {
		g.refuse(w, r, http.StatusRequestHeaderFieldsTooLarge, codes.InvalidArgument, ReasonInvalidArgument,
			fmt.Sprintf("request headers: %d bytes, more than the limit of %d", size, g.cfg.MaxHeaderBytes))
		return
	}
	// A browser may send text/plain, form and multipart bodies to any
	// origin without asking it first (CORS "simple requests"): accepting
	// them as JSON would let any web page call ledgerd with the client
	// certificate its visitor's browser holds.
	if mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mediaType != "application/json" {
		g.refuse(w, r, http.StatusUnsupportedMediaType, codes.InvalidArgument, ReasonInvalidArgument,
			fmt.Sprintf("Content-Type: want application/json, got %q", r.Header.Get("Content-Type")))
		return
	}
	if g.auth != nil {
		if _, err := g.auth.authenticate(g.callContext(r)); err != nil {
			g.answer(w, r, err)
			return
		}
	}
	if r.ContentLength > g.cfg.MaxRequestBytes {
		g.refuse(w, r, http.StatusRequestEntityTooLarge, codes.InvalidArgument, ReasonInvalidArgument,
			fmt.Sprintf("request body: %d bytes, more than the limit of %d", r.ContentLength, g.cfg.MaxRequestBytes))
		return
	}
	// The body may now be read, for as long as BodyReadTimeout allows
	// (from here; the headers had ReadHeaderTimeout of their own).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(g.cfg.BodyReadTimeout))
	body := &guardedBody{ReadCloser: http.MaxBytesReader(w, r.Body, g.cfg.MaxRequestBytes)}
	r = r.WithContext(context.WithValue(r.Context(), guardedBodyKey{}, body))
	r.Body = body
	g.next.ServeHTTP(w, r)
}

// refuse answers with the gateway's error shape ({"code", "message",
// "details"}) and the HTTP status given.
func (g *rpcGuard) refuse(w http.ResponseWriter, r *http.Request, httpStatus int, code codes.Code, reason, message string) {
	g.answer(w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: withDetails(code, reason, message, nil)})
}

// answer writes err as the gateway does, for a request whose body is left
// unread: the connection closes after the answer, rather than read what
// remains of the body (net/http would otherwise drain up to 256 KiB of it).
func (g *rpcGuard) answer(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Connection", "close")
	runtime.DefaultHTTPErrorHandler(r.Context(), g.mux, g.marshal, w, r, err)
}

// headerBytes is the size of a request's headers as gRPC counts the
// metadata they become: each field's name and value, plus 32 bytes.
func headerBytes(r *http.Request) int {
	size := len(r.Host) + len(":authority") + 32
	for name, values := range r.Header {
		for _, value := range values {
			size += len(name) + len(value) + 32
		}
	}
	return size
}

// callContext is the context in which Auth sees an HTTP request:
// as the gateway's in-process connection presents it to the gRPC server,
// with the caller's authorization header, the principal of its verified
// client certificate, and its source address.
func (g *rpcGuard) callContext(r *http.Request) context.Context {
	md := g.forward(r.Context(), r)
	if values := r.Header.Values("Authorization"); len(values) > 0 {
		md.Set("authorization", values...)
	}
	ctx := peer.NewContext(r.Context(), &peer.Peer{Addr: inProcessAddr{}, AuthInfo: gatewayAuthInfo{}})
	return metadata.NewIncomingContext(ctx, md)
}

// guardedBody is a request body with the limits of the HTTP port, which
// records why reading it failed so that the error handler can answer 413
// or 408 instead of the gateway's 400.
type guardedBody struct {
	io.ReadCloser
	failure atomic.Value // error: the first read error that is not io.EOF
}

type guardedBodyKey struct{}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.failure.CompareAndSwap(nil, err)
	}
	return n, err
}

// bodyFailure returns the status to answer for a request whose body could
// not be read within the HTTP port's limits, or nil.
func bodyFailure(r *http.Request, maxBytes int64) error {
	body, _ := r.Context().Value(guardedBodyKey{}).(*guardedBody)
	if body == nil {
		return nil
	}
	err, _ := body.failure.Load().(error)
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestEntityTooLarge,
			Err: withDetails(codes.InvalidArgument, ReasonInvalidArgument, fmt.Sprintf("request body: more than the limit of %d bytes", maxBytes), nil)}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestTimeout,
			Err: withDetails(codes.DeadlineExceeded, ReasonDeadlineExceeded, "request body: not received within the read timeout", nil)}
	}
	return nil
}
