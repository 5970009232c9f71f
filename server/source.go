package server

import (
	"context"
	"net/http"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// sourceKey is the metadata key in which the HTTP gateway forwards the
// network address of the HTTP caller. Like certificatePrincipalKey, it is
// trusted only on the gateway's in-process connection, and the gateway
// never forwards it from a caller's headers.
const sourceKey = "ledgerd-source-address"

// callSource returns the network address the call came from: the HTTP
// caller's, for a call the gateway forwards, or else the gRPC peer's. ""
// if unknown. The gateway's in-process connection is recognised by its
// transport credentials with TLS, and by its address without (no network
// connection has it), so that plaintext deployments log the HTTP caller
// too, not the gateway's pipe.
func callSource(ctx context.Context) string {
	p, _ := peer.FromContext(ctx)
	if p == nil {
		return ""
	}
	if _, viaGateway := p.AuthInfo.(gatewayAuthInfo); viaGateway || p.Addr == (inProcessAddr{}) {
		if values := metadata.ValueFromIncomingContext(ctx, sourceKey); len(values) == 1 {
			return values[0]
		}
		return ""
	}
	if p.Addr == nil {
		return ""
	}
	return p.Addr.String()
}

// httpSource is the source address of an HTTP request, as the gateway
// forwards it.
func httpSource(r *http.Request) string {
	return r.RemoteAddr
}
