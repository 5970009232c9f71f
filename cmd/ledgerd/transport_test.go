package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// TestIsolationRequestLogNamesTheHTTPCaller: with the gateway in-process,
// as ledgerd serves it (without TLS here), the request log's peer.address
// of an HTTP call is the HTTP caller's address, not the gateway's pipe.
func TestIsolationRequestLogNamesTheHTTPCaller(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t)})
	conn, err := net.Dial("tcp", d.httpAddr)
	require.NoError(t, err)
	client := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
	res, err := client.Post("http://"+d.httpAddr+"/ledger.v1.LedgerService/Lookup", "application/json", strings.NewReader(`{"namespace":"ns","key":"k"}`))
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)

	d.awaitLog(t, `"msg":"finished call"`)
	var line map[string]any
	for _, text := range strings.Split(d.stdout.String(), "\n") {
		if strings.Contains(text, `"msg":"finished call"`) {
			require.NoError(t, json.Unmarshal([]byte(text), &line))
		}
	}
	require.Equal(t, conn.LocalAddr().String(), line["peer.address"], "%v", line)
}

func TestHTTPFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseServe(nil, map[string]string{"LEDGER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7/32", "LEDGER_HTTP_BODY_READ_TIMEOUT": "30s"})
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}, cfg.HTTP.TrustedProxies)
	require.Equal(t, "30s", cfg.HTTP.BodyReadTimeout.String())
	require.Equal(t, 64<<10, cfg.HTTP.MaxHeaderBytes)
	require.Equal(t, "1m0s", cfg.GRPC.RequestReadTimeout.String())
	require.Equal(t, 10000, cfg.GRPC.MaxPendingRequests)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--trusted-proxies", "10.0.0.1"}, "want CIDRs"},
		{[]string{"--http-max-header-bytes", "2000000"}, "--http-max-header-bytes must be between"},
		{[]string{"--grpc-max-header-bytes", "16384", "--http-max-header-bytes", "16384"}, "--http-max-header-bytes must be between"},
		{[]string{"--http-body-read-timeout", "0s"}, "--http-body-read-timeout must be positive"},
		{[]string{"--grpc-request-read-timeout", "0s"}, "--grpc-request-read-timeout must be positive"},
		{[]string{"--grpc-max-pending-requests", "0"}, "--grpc-max-pending-requests must be positive"},
	} {
		_, err := parseServe(tc.args, nil)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}
