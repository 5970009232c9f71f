package server

import (
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
)

// sameOrigin refuses, with 403 and the gateway's error shape, every request
// other than GET, HEAD and OPTIONS that a browser sends for a page of
// another origin, before next sees it. The decision is the standard
// library's http.CrossOriginProtection:
//
//   - Sec-Fetch-Site (sent by every browser since 2023) must be
//     same-origin or none; cross-site and same-site are refused (a sibling
//     subdomain is another tenant's page as often as not);
//   - without it, an Origin header must name the request's own host
//     ("Origin: null", a sandboxed page, never does).
//
// Requests that carry neither header (curl, the clients, a proxy's health
// check) pass: they are not a browser acting for a page. The content-type
// check of rpcGuard already stops the form posts that a browser sends
// without asking; this stops the rest (a fetch with application/json from
// a page elsewhere), which matters because a browser that holds a client
// certificate presents it to any page's requests.
func sameOrigin(next http.Handler, mux *runtime.ServeMux, marshaler runtime.Marshaler) http.Handler {
	protection := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := protection.Check(r); err != nil {
			w.Header().Set("Connection", "close") // the body is left unread
			runtime.DefaultHTTPErrorHandler(r.Context(), mux, marshaler, w, r, &runtime.HTTPStatusError{
				HTTPStatus: http.StatusForbidden,
				Err: withDetails(codes.PermissionDenied, ReasonPermissionDenied,
					"cross-origin request refused ("+err.Error()+"): state-changing calls are accepted from this server's own pages only", nil),
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}
