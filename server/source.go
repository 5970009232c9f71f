package server

import (
	"context"
	"net/http"
	"net/netip"
	"strings"

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
// forwards it: the address it came from, unless that is a trusted proxy's.
// Then it is the rightmost address of X-Forwarded-For that is not itself
// a trusted proxy's: each proxy appends the address it received the
// request from, so the addresses to the right of the first untrusted one
// were written by trusted proxies, and those to its left by whoever the
// caller is, who may write anything. If every address is trusted, it is
// the leftmost one; with no usable header, the proxy's own.
func httpSource(r *http.Request, trustedProxies []netip.Prefix) string {
	if len(trustedProxies) == 0 {
		return r.RemoteAddr
	}
	peerAddr, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !trusted(peerAddr.Addr(), trustedProxies) {
		return r.RemoteAddr
	}
	var forwarded []string
	for _, header := range r.Header.Values("X-Forwarded-For") {
		for _, addr := range strings.Split(header, ",") {
			forwarded = append(forwarded, strings.TrimSpace(addr))
		}
	}
	source := r.RemoteAddr
	for i := len(forwarded) - 1; i >= 0; i-- {
		addr, err := netip.ParseAddr(forwarded[i])
		if err != nil {
			break // a malformed entry: nothing to its left can be trusted either
		}
		source = addr.String()
		if !trusted(addr, trustedProxies) {
			break
		}
	}
	return source
}

// trusted reports whether addr is in one of the networks.
func trusted(addr netip.Addr, networks []netip.Prefix) bool {
	addr = addr.Unmap()
	for _, network := range networks {
		if network.Contains(addr) {
			return true
		}
	}
	return false
}
