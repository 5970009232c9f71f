package server

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
)

// sameOrigin refuses, with 403 and the gateway's error shape, every request
// other than GET, HEAD and OPTIONS that comes from a page of another
// origin, before next sees it:
//
//   - Sec-Fetch-Site cross-site or same-site (a browser's own account of
//     where the request comes from; same-site is refused too, since a
//     sibling subdomain is another tenant's page as often as not);
//   - an Origin header that is not the request's own origin: the scheme
//     of the connection (or, from a trusted proxy, its X-Forwarded-Proto)
//     and the Host header (or, from a trusted proxy, X-Forwarded-Host).
//     "Origin: null" (a sandboxed page, a redirect) is never the own.
//
// Requests that carry neither header (curl, the clients, a proxy's health
// check) pass: they are not a browser acting for a page. The content-type
// check of rpcGuard already stops the form posts that a browser sends
// without asking; this stops the rest (a fetch with application/json from
// a page whose origin the server would otherwise not know), which matters
// because a browser that holds a client certificate presents it to any
// page's requests.
func sameOrigin(next http.Handler, mux *runtime.ServeMux, marshaler runtime.Marshaler, trustedProxies []netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if why := crossOrigin(r, trustedProxies); why != "" {
			w.Header().Set("Connection", "close") // the body is left unread
			runtime.DefaultHTTPErrorHandler(r.Context(), mux, marshaler, w, r, &runtime.HTTPStatusError{
				HTTPStatus: http.StatusForbidden,
				Err:        withDetails(codes.PermissionDenied, ReasonPermissionDenied, "cross-origin request refused: "+why, nil),
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossOrigin says why r comes from another origin, or "" if it does not
// (or does not say).
func crossOrigin(r *http.Request, trustedProxies []netip.Prefix) string {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "cross-site", "same-site":
		return "Sec-Fetch-Site is " + site + "; state-changing calls are accepted from this origin's pages only"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	u, err := url.Parse(origin)
	if err != nil || origin == "null" || u.Host == "" {
		return "Origin " + quoteOrigin(origin) + " is not this server's"
	}
	scheme, hosts := ownOrigin(r, trustedProxies)
	if scheme != "" && !strings.EqualFold(u.Scheme, scheme) {
		return "Origin " + quoteOrigin(origin) + " is not this server's"
	}
	for _, host := range hosts {
		if strings.EqualFold(u.Host, host) {
			return ""
		}
	}
	return "Origin " + quoteOrigin(origin) + " is not this server's"
}

// ownOrigin is the scheme ("" when a trusted proxy does not say) and the
// hosts under which r's caller reached this server.
func ownOrigin(r *http.Request, trustedProxies []netip.Prefix) (string, []string) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	hosts := []string{r.Host}
	if len(trustedProxies) == 0 {
		return scheme, hosts
	}
	peerAddr, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !trusted(peerAddr.Addr(), trustedProxies) {
		return scheme, hosts
	}
	// A proxy that terminates TLS speaks plain HTTP to ledgerd: the
	// browser's scheme is the one it forwards, if it does.
	scheme = strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")[0]))
	if host := strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Host"), ",")[0]); host != "" {
		hosts = append(hosts, host)
	}
	return scheme, hosts
}

// quoteOrigin quotes an Origin header for a message, shortened: it is the
// caller's text.
func quoteOrigin(origin string) string {
	if len(origin) > 200 {
		origin = origin[:200] + "…"
	}
	return `"` + strings.ToValidUTF8(origin, "?") + `"`
}
