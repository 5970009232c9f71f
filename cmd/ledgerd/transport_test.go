package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

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

// TestIsolationConnectionsPerPort: with --max-connections 2, callers who
// open connections and send nothing hold at most two on each port; the
// next caller is served as soon as one of them closes.
func TestIsolationConnectionsPerPort(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_MAX_CONNECTIONS": "2"})
	probes := map[string]func() error{
		d.httpAddr: func() error {
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			res, err := client.Get("http://" + d.httpAddr + "/healthz")
			if err == nil {
				_ = res.Body.Close()
			}
			return err
		},
		d.grpcAddr: func() error {
			conn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			return err
		},
	}
	for addr, probe := range probes {
		var silent []net.Conn
		for range 2 {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			silent = append(silent, conn)
		}
		answered := make(chan error, 1)
		go func() { answered <- probe() }()
		// The port holds its two: the probe waits in the listen queue (the
		// silent ones are closed by the server only after 10s).
		select {
		case err := <-answered:
			t.Fatalf("%s answered beyond the cap of 2 connections (err %v)", addr, err)
		case <-time.After(200 * time.Millisecond):
		}
		_ = silent[0].Close()
		require.NoError(t, <-answered, "%s served once a connection closed", addr)
		_ = silent[1].Close()
	}
}
