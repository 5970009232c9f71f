package server_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
	"github.com/ledgerd/ledgerd/server/console"
)

// TestConsoleServed: the HTTP port serves the console under /ui/, with its
// security headers on every answer (the redirect and a 404 included).
func TestConsoleServed(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	for _, tc := range []struct {
		path, wantType string
		wantStatus     int
	}{
		{"/ui", "", http.StatusMovedPermanently},
		{"/ui/", "text/html; charset=utf-8", http.StatusOK},
		{"/ui/js/app.js", "text/javascript; charset=utf-8", http.StatusOK},
		{"/ui/console.css", "text/css; charset=utf-8", http.StatusOK},
		{"/ui/no-such-file.js", "", http.StatusNotFound},
		{"/ui/js/", "", http.StatusNotFound},
	} {
		res, err := client.Get(b.url + tc.path)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, tc.wantStatus, res.StatusCode, tc.path)
		require.Equal(t, console.ContentSecurityPolicy, res.Header.Get("Content-Security-Policy"), tc.path)
		require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"), tc.path)
		require.Equal(t, "no-referrer", res.Header.Get("Referrer-Policy"), tc.path)
		if tc.wantType != "" {
			require.Equal(t, tc.wantType, res.Header.Get("Content-Type"), tc.path)
		}
		if tc.wantStatus == http.StatusMovedPermanently {
			require.Equal(t, "/ui/", res.Header.Get("Location"))
		}
	}
	require.Equal(t,
		"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
		console.ContentSecurityPolicy)

	// The console does not take the gateway's routes: the API answers as before.
	b.ok(t, "Reserve", `{"namespace": "web", "key": "k", "owner": "w"}`)
	// Nor do the console's paths reach the gateway: a POST under /ui/ is 405.
	res, err := http.Post(b.url+"/ui/", "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
}

// TestConsoleOff: with DisableConsole (ledgerd serve --console=false),
// /ui/ is 404 and the API is unchanged.
func TestConsoleOff(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{})
	srv, err := server.New(b.Store, server.Config{})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := serveBothPorts(t, srv, lis, server.HTTPConfig{DisableConsole: true})

	for _, path := range []string{"/ui/", "/ui/js/app.js", "/ui"} {
		res, err := http.Get(url + path)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusNotFound, res.StatusCode, path)
		require.Empty(t, res.Header.Get("Content-Security-Policy"), path)
	}
	res, err := http.Post(url+"/ledger.v1.LedgerAdminService/WhoAmI", "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
}

// TestCrossOriginRequestsRefused: a state-changing request that a browser
// sends for a page of another origin is refused with 403 before the
// gateway sees it, whatever its content type, and changes nothing; the
// console's own requests (same origin) and clients that are not browsers
// (no Origin, no Sec-Fetch-Site) are served.
func TestCrossOriginRequestsRefused(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	b.ok(t, "Reserve", `{"namespace": "web", "key": "held", "owner": "w1", "leaseTtl": "3600s"}`)
	own := b.url // http://127.0.0.1:PORT: the origin of the console's pages
	forceRelease := `{"namespace": "web", "key": "held", "reason": "from elsewhere"}`

	post := func(contentType string, header map[string]string, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, b.url+"/ledger.v1.LedgerAdminService/ForceRelease", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", contentType)
		for name, value := range header {
			req.Header.Set(name, value)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		raw, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		var answer map[string]any
		_ = json.Unmarshal(raw, &answer)
		return res.StatusCode, answer
	}

	for _, tc := range []struct {
		name        string
		contentType string
		header      map[string]string
	}{
		// What a cross-site <form method=post enctype=text/plain> sends.
		{"form post, text/plain", "text/plain", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{"form post, urlencoded", "application/x-www-form-urlencoded", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}},
		// A fetch with application/json from another origin.
		{"json, cross-site", "application/json", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{"json, other origin only", "application/json", map[string]string{"Origin": "http://evil.example"}},
		{"json, sibling subdomain", "application/json", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"json, opaque origin", "application/json", map[string]string{"Origin": "null"}},
		{"json, same host, other scheme", "application/json", map[string]string{"Origin": strings.Replace(own, "http://", "https://", 1)}},
		{"json, same host, other port", "application/json", map[string]string{"Origin": "http://127.0.0.1:1"}},
	} {
		code, answer := post(tc.contentType, tc.header, forceRelease)
		requireHTTPError(t, http.StatusForbidden, 7, "PERMISSION_DENIED", code, answer)
		require.Contains(t, answer["message"], "cross-origin request refused", tc.name)
	}
	entry := b.ok(t, "Lookup", `{"namespace": "web", "key": "held"}`)["entry"].(map[string]any)
	require.Equal(t, "STATE_LEASED", entry["state"], "no refused request changed the row")
	require.Equal(t, "w1", entry["owner"])
	require.Equal(t, "1", entry["fencingToken"])
	history := b.ok(t, "Lookup", `{"namespace": "web", "key": "held", "includeHistory": true}`)["history"].([]any)
	require.Len(t, history, 1, "no admin event was written")

	// Reads stay open to any origin's GET (the console's files, the probes).
	code, _ := b.get(t, "/healthz")
	require.Equal(t, http.StatusOK, code)

	// The console's own call: same origin, as a browser marks it.
	code, answer := post("application/json", map[string]string{"Origin": own, "Sec-Fetch-Site": "same-origin"}, forceRelease)
	require.Equal(t, http.StatusOK, code, "%v", answer)
	require.Equal(t, "STATE_RELEASED", answer["entry"].(map[string]any)["state"])
	// A client that is not a browser sends neither header.
	b.ok(t, "Reserve", `{"namespace": "web", "key": "held", "owner": "w2", "leaseTtl": "3600s"}`)
	code, answer = post("application/json", nil, forceRelease)
	require.Equal(t, http.StatusOK, code, "%v", answer)
}

// TestGetNamespaceUsageAndActivity: GetNamespace (as the console's
// namespace page calls it, through the gateway) reports the held and the
// expired leases, and this replica's Reserves, replays, calls and errors
// over the last hour.
func TestGetNamespaceUsageAndActivity(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	b.ok(t, "Reserve", `{"namespace": "web", "key": "held", "owner": "w1", "leaseTtl": "3600s"}`)
	b.ok(t, "Reserve", `{"namespace": "web", "key": "stuck", "owner": "w2", "leaseTtl": "0.05s"}`)
	b.ok(t, "Reserve", `{"namespace": "web", "key": "done", "owner": "w3"}`)
	b.ok(t, "Complete", `{"namespace": "web", "key": "done", "fencingToken": 1, "result": "b2s="}`)
	b.ok(t, "Reserve", `{"namespace": "web", "key": "done", "owner": "w4"}`) // a replay
	code, _ := b.call(t, "Complete", `{"namespace": "web", "key": "held", "fencingToken": 9, "result": "eA=="}`)
	require.Equal(t, http.StatusConflict, code, "LEASE_LOST: an error")
	b.ok(t, "Reserve", `{"namespace": "other", "key": "k", "owner": "w"}`)

	// The gateway answers in lowerCamelCase, as the console reads it.
	getNamespace := func() (usage, activity map[string]any) {
		res, err := http.Post(b.url+"/ledger.v1.LedgerAdminService/GetNamespace", "application/json", strings.NewReader(`{"name": "web"}`))
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
		var got map[string]map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&got))
		return got["usage"], got["activity"]
	}
	var usage, activity map[string]any
	require.Eventually(t, func() bool {
		usage, activity = getNamespace()
		return usage["expiredLeases"] == "1"
	}, time.Minute, 20*time.Millisecond, "the 50ms lease runs out by the database's clock")
	require.Equal(t, "1", usage["heldLeases"], "an expired lease is not held")
	require.Equal(t, "4", activity["reserves"])
	require.Equal(t, "1", activity["replays"])
	require.Equal(t, "6", activity["calls"], "4 Reserves and 2 Completes; GetNamespace names no namespace field, the other namespace's call is its own")
	require.Equal(t, "1", activity["errors"])
	window, err := time.ParseDuration(activity["window"].(string))
	require.NoError(t, err)
	require.Greater(t, window, time.Duration(0))
	require.LessOrEqual(t, window, time.Hour)
}
