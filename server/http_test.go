package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// httpBundle is a ledgerd with its HTTP port, as cmd/ledgerd runs it: the
// gRPC server on a loopback port, the HTTP handler calling it.
type httpBundle struct {
	url      string
	grpcAddr string
	server   *server.Server
	metrics  *server.Metrics
	ledger   ledgertest.Bundle
	log      *ledgertest.LogBuffer // the JSON log
}

func setupHTTP(t *testing.T) httpBundle {
	t.Helper()
	return serveHTTP(t, ledgertest.Store(t, ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 10 * time.Millisecond}}))
}

func serveHTTP(t *testing.T, b ledgertest.Bundle) httpBundle {
	t.Helper()
	return serveHTTPWith(t, b, server.Config{})
}

// serveHTTPWith serves b's store as serveHTTP does, with cfg (whose Logger
// and Metrics it sets).
func serveHTTPWith(t *testing.T, b ledgertest.Bundle, cfg server.Config) httpBundle {
	t.Helper()
	log := &ledgertest.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(log, nil))
	metrics := server.NewMetrics(b.Store, server.MetricsConfig{Logger: logger})
	cfg.Logger, cfg.Metrics = logger, metrics
	srv, err := server.New(b.Store, cfg)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := serveBothPorts(t, srv, lis, server.HTTPConfig{GRPCAddr: lis.Addr().String(), Metrics: metrics, Logger: logger})
	return httpBundle{url: url, grpcAddr: lis.Addr().String(), server: srv, metrics: metrics, ledger: b, log: log}
}

// serveBothPorts serves srv's gRPC port on lis and its HTTP port on a test
// server (the gateway calling the gRPC server in-process, as ledgerd serve
// wires it, unless httpCfg.GRPCAddr), both stopped when the test ends, and
// returns the HTTP port's URL.
func serveBothPorts(t *testing.T, srv *server.Server, lis net.Listener, httpCfg server.HTTPConfig) string {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	gatewayCtx, closeGateway := context.WithCancel(context.Background())
	handler, err := srv.HTTPHandler(gatewayCtx, httpCfg)
	require.NoError(t, err)
	httpServer := httptest.NewServer(handler)
	t.Cleanup(func() {
		httpServer.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(t, <-served)
		closeGateway()
	})
	return httpServer.URL
}

// call POSTs a JSON body to an RPC, as curl would, and returns the status
// and the decoded JSON answer.
func (b httpBundle) call(t *testing.T, rpc, body string) (int, map[string]any) {
	t.Helper()
	res, err := http.Post(b.url+"/ledger.v1.LedgerService/"+rpc, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	var answer map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
	return res.StatusCode, answer
}

// ok calls an RPC that must succeed.
func (b httpBundle) ok(t *testing.T, rpc, body string) map[string]any {
	t.Helper()
	code, answer := b.call(t, rpc, body)
	require.Equal(t, http.StatusOK, code, "%s %s: %v", rpc, body, answer)
	return answer
}

func (b httpBundle) get(t *testing.T, path string) (int, string) {
	t.Helper()
	res, err := http.Get(b.url + path)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}

// requireHTTPError checks an error answer: HTTP status, gRPC code, and the
// ErrorInfo reason in the details.
func requireHTTPError(t *testing.T, httpStatus int, code float64, reason string, gotStatus int, answer map[string]any) {
	t.Helper()
	require.Equal(t, httpStatus, gotStatus, "%v", answer)
	require.Equal(t, code, answer["code"], "%v", answer)
	require.NotEmpty(t, answer["message"])
	details, _ := answer["details"].([]any)
	require.NotEmpty(t, details, "%v", answer)
	info := details[0].(map[string]any)
	require.Equal(t, "type.googleapis.com/google.rpc.ErrorInfo", info["@type"])
	require.Equal(t, "ledgerd", info["domain"])
	require.Equal(t, reason, info["reason"])
}

// TestHTTPRoundTrip drives a key through Reserve, Complete, a replay and
// Lookup with JSON, as curl would.
func TestHTTPRoundTrip(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)

	res := b.ok(t, "Reserve", `{"namespace": "web", "key": "order-1", "owner": "w1", "leaseTtl": "60s", "fingerprint": "AQI="}`)
	acquired := res["acquired"].(map[string]any)
	require.Equal(t, "1", acquired["fencingToken"], "int64 is a string in JSON")
	require.Equal(t, float64(1), acquired["attempt"])
	require.Equal(t, false, acquired["takeover"], "unset fields are included")
	require.Equal(t, "60s", acquired["leaseTtl"])
	require.NotEmpty(t, acquired["leaseExpiresAt"])

	// Field names as in the proto file work too.
	done := b.ok(t, "Complete", `{"namespace": "web", "key": "order-1", "fencing_token": 1, "result": "b2s="}`)
	require.NotEmpty(t, done["completedAt"])
	require.Equal(t, false, done["alreadyCompleted"])

	res = b.ok(t, "Reserve", `{"namespace": "web", "key": "order-1", "owner": "w2", "fingerprint": "AQI="}`)
	completed := res["completed"].(map[string]any)
	require.Equal(t, "b2s=", completed["result"])
	require.Equal(t, "1", completed["fencingToken"])
	require.Equal(t, "w1", completed["owner"])
	require.Equal(t, done["completedAt"], completed["completedAt"])

	entry := b.ok(t, "Lookup", `{"namespace": "web", "key": "order-1"}`)["entry"].(map[string]any)
	require.Equal(t, "STATE_COMPLETED", entry["state"])
	require.Equal(t, "b2s=", entry["result"])
	require.Equal(t, "AQI=", entry["fingerprint"])

	// The admin service is there too.
	listed, err := http.Post(b.url+"/ledger.v1.LedgerAdminService/ListNamespaces", "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	defer listed.Body.Close()
	require.Equal(t, http.StatusOK, listed.StatusCode)
	var listing struct {
		Namespaces []struct {
			Name string `json:"name"`
		} `json:"namespaces"`
	}
	require.NoError(t, json.NewDecoder(listed.Body).Decode(&listing))
	require.Len(t, listing.Namespaces, 1)
	require.Equal(t, "web", listing.Namespaces[0].Name)

	// The gateway called the gRPC server: its request log has the calls.
	require.Contains(t, b.log.String(), `"grpc.method":"Lookup"`)
	require.Contains(t, b.log.String(), `"grpc.method":"ListNamespaces"`)
}

func TestHTTPErrors(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	b.ok(t, "Reserve", `{"namespace": "web", "key": "k", "owner": "w1", "fingerprint": "AQ=="}`)

	cases := []struct {
		name, rpc, body string
		httpStatus      int
		code            float64
		reason          string
	}{
		{"stale token", "Complete", `{"namespace": "web", "key": "k", "fencingToken": "7"}`, http.StatusConflict, 10, server.ReasonLeaseLost},
		{"fingerprint mismatch", "Reserve", `{"namespace": "web", "key": "k", "owner": "w2", "fingerprint": "Ag=="}`, http.StatusBadRequest, 9, server.ReasonFingerprintMismatch},
		{"invalid argument", "Reserve", `{"namespace": "web", "key": "", "owner": "w"}`, http.StatusBadRequest, 3, server.ReasonInvalidArgument},
		{"unknown key", "Lookup", `{"namespace": "web", "key": "nope"}`, http.StatusNotFound, 5, server.ReasonNotFound},
		{"not JSON", "Reserve", `{"namespace": `, http.StatusBadRequest, 3, server.ReasonInvalidArgument},
		{"unknown field", "Complete", `{"namespace": "web", "key": "k", "fencingTokn": "1"}`, http.StatusBadRequest, 3, server.ReasonInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, answer := b.call(t, tc.rpc, tc.body)
			requireHTTPError(t, tc.httpStatus, tc.code, tc.reason, code, answer)
		})
	}

	t.Run("invalid argument names the field", func(t *testing.T) {
		_, answer := b.call(t, "Reserve", `{"namespace": "web", "key": "", "owner": "w"}`)
		require.Contains(t, answer["message"], "key")
		details := answer["details"].([]any)
		require.Len(t, details, 2)
		require.Equal(t, "type.googleapis.com/google.rpc.BadRequest", details[1].(map[string]any)["@type"])
	})
	t.Run("stale token message", func(t *testing.T) {
		_, answer := b.call(t, "Complete", `{"namespace": "web", "key": "k", "fencingToken": "7"}`)
		require.Contains(t, answer["message"], "lease lost")
	})
	t.Run("wrong method", func(t *testing.T) {
		code, body := b.get(t, "/ledger.v1.LedgerService/Reserve")
		require.Equal(t, http.StatusMethodNotAllowed, code, body)
		require.Contains(t, body, "POST")
	})
	t.Run("no such route", func(t *testing.T) {
		code, body := b.get(t, "/ledger.v1.LedgerService/Frobnicate")
		require.Equal(t, http.StatusNotFound, code, body)
	})
}

// TestHTTPMetrics runs a scripted sequence of calls and reads /metrics.
func TestHTTPMetrics(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)

	for _, step := range []struct {
		rpc, body  string
		httpStatus int
		counts     string // what the step counts
	}{
		{"Reserve", `{"namespace": "m", "key": "held", "owner": "w1", "leaseTtl": "3600s"}`, 200, "acquired"},
		{"Reserve", `{"namespace": "m", "key": "held", "owner": "w2"}`, 200, "in_progress"},
		{"Reserve", `{"namespace": "m", "key": "held", "owner": "w2", "fingerprint": "AQ=="}`, 400, "mismatch"},
		{"Reserve", `{"namespace": "m", "key": "done", "owner": "w1"}`, 200, "acquired"},
		{"Complete", `{"namespace": "m", "key": "done", "fencingToken": "1", "result": "b2s="}`, 200, ""},
		{"Reserve", `{"namespace": "m", "key": "done", "owner": "w2"}`, 200, "replayed"},
		{"Complete", `{"namespace": "m", "key": "done", "fencingToken": "2"}`, 409, "stale token (Complete)"},
		{"Reserve", `{"namespace": "m", "key": "released", "owner": "w1"}`, 200, "acquired"},
		{"Release", `{"namespace": "m", "key": "released", "fencingToken": "1"}`, 200, ""},
		{"Reserve", `{"namespace": "m", "key": "released", "owner": "w2", "leaseTtl": "3600s"}`, 200, "takeover"},
		{"Reserve", `{"namespace": "m", "key": "expired", "owner": "w1", "leaseTtl": "0.050s"}`, 200, "acquired"},
		{"Reserve", `{"namespace": "m", "key": "failed", "owner": "w1"}`, 200, "acquired"},
		{"Fail", `{"namespace": "m", "key": "failed", "fencingToken": "1", "error": {"message": "bad input"}}`, 200, ""},
		{"Reserve", `{"namespace": "m", "key": "failed", "owner": "w2"}`, 200, "failed"},
		{"Heartbeat", `{"namespace": "m", "key": "failed", "fencingToken": "1"}`, 409, "stale token (Heartbeat)"},
	} {
		code, answer := b.call(t, step.rpc, step.body)
		require.Equal(t, step.httpStatus, code, "%s %s: %v", step.rpc, step.body, answer)
	}
	require.Eventually(t, func() bool {
		entry := b.ok(t, "Lookup", `{"namespace": "m", "key": "expired"}`)["entry"].(map[string]any)
		return entry["leaseExpired"] == true
	}, time.Minute, 10*time.Millisecond)
	b.metrics.ObserveSweep(ledger.SweepReport{PurgedEntries: map[string]int64{"m": 3}, DeletedEvents: map[string]int64{"m": 4, "": 1}})
	b.metrics.ObserveSweep(ledger.SweepReport{PurgedEntries: map[string]int64{"m": 1}, Err: context.DeadlineExceeded})

	code, metrics := b.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, line := range []string{
		`ledgerd_reserve_outcomes_total{namespace="m",outcome="acquired"} 5`,
		`ledgerd_reserve_outcomes_total{namespace="m",outcome="takeover"} 1`,
		`ledgerd_reserve_outcomes_total{namespace="m",outcome="replayed"} 1`,
		`ledgerd_reserve_outcomes_total{namespace="m",outcome="in_progress"} 1`,
		`ledgerd_reserve_outcomes_total{namespace="m",outcome="failed"} 1`,
		`ledgerd_reserve_outcomes_total{namespace="m",outcome="mismatch"} 1`,
		`ledgerd_stale_token_refusals_total{method="Complete",namespace="m"} 1`,
		`ledgerd_stale_token_refusals_total{method="Heartbeat",namespace="m"} 1`,
		`ledgerd_leases_held{namespace="m"} 2`,
		`ledgerd_leases_expired{namespace="m"} 1`,
		`ledgerd_lease_stats_errors_total 0`,
		`ledgerd_sweeper_purged_entries_total{namespace="m"} 4`,
		`ledgerd_sweeper_deleted_events_total 5`,
		`ledgerd_events_deleted_total{namespace="m"} 4`,
		`ledgerd_events_deleted_total{namespace="_platform"} 1`,
		`ledgerd_sweeper_errors_total 1`,
		`ledgerd_reserve_waiters 0`,
		`ledgerd_listener_connected 1`,
		`ledgerd_db_pool_max_conns `,
		`ledgerd_db_pool_acquires_total `,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Reserve",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 9`,
		`grpc_server_handled_total{grpc_code="FailedPrecondition",grpc_method="Reserve",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="Aborted",grpc_method="Complete",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 1`,
		`grpc_server_handling_seconds_count{grpc_method="Reserve",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 10`,
		`grpc_server_handling_seconds_bucket{grpc_method="Reserve",grpc_service="ledger.v1.LedgerService",grpc_type="unary",le="60"} 10`,
		`go_goroutines `,
	} {
		if !strings.HasSuffix(line, " ") { // a trailing space: any value
			line += "\n"
		}
		require.Contains(t, metrics, line, "in:\n%s", metrics)
	}
	// The coalescing figures exist when coalescing is on (the default), and
	// only then (LEDGER_TEST_NO_COALESCE=1, as --no-coalesce).
	for _, line := range []string{
		`ledgerd_coalesced_calls_total{kind="reserve"} `,
		`ledgerd_coalesced_calls_total{kind="complete"} `,
		`ledgerd_coalesced_statements_total{kind="reserve"} `,
		"ledgerd_coalesce_fallbacks_total{kind=\"complete\"} 0\n",
	} {
		if b.ledger.Store.CoalesceStats() != nil {
			require.Contains(t, metrics, line)
		} else {
			require.NotContains(t, metrics, strings.Fields(line)[0])
		}
	}

	// The lease counts are cached: a new lease shows only after the interval.
	b.ok(t, "Reserve", `{"namespace": "m", "key": "later", "owner": "w1", "leaseTtl": "3600s"}`)
	_, metrics = b.get(t, "/metrics")
	require.Contains(t, metrics, `ledgerd_leases_held{namespace="m"} 2`+"\n")
	require.Contains(t, metrics, `ledgerd_reserve_outcomes_total{namespace="m",outcome="acquired"} 6`+"\n")
}

// TestHTTPRequestLog checks the one log line per RPC.
func TestHTTPRequestLog(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	b.ok(t, "Reserve", `{"namespace": "logs", "key": "k1", "owner": "w1"}`)
	b.call(t, "Complete", `{"namespace": "logs", "key": "k1", "fencingToken": "9"}`)

	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.log.String()), "\n") {
		var entry map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &entry), line)
		if entry["msg"] == "finished call" {
			lines = append(lines, entry)
		}
	}
	require.Len(t, lines, 2)
	reserve, complete := lines[0], lines[1]
	require.Equal(t, "Reserve", reserve["grpc.method"])
	require.Equal(t, "logs", reserve["namespace"])
	require.Equal(t, "k1", reserve["key"])
	require.Equal(t, "acquired", reserve["outcome"])
	require.Equal(t, "OK", reserve["grpc.code"])
	require.IsType(t, float64(0), reserve["duration_ms"])
	require.Equal(t, "INFO", reserve["level"])

	require.Equal(t, "Complete", complete["grpc.method"])
	require.Equal(t, "LEASE_LOST", complete["outcome"])
	require.Equal(t, "Aborted", complete["grpc.code"])
	require.Equal(t, "k1", complete["key"])
}

func TestProbes(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)

	code, body := b.get(t, "/healthz")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status": "ok"}`, body)
	code, body = b.get(t, "/readyz")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status": "ready"}`, body)

	b.server.Drain()
	code, body = b.get(t, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.JSONEq(t, `{"status": "unavailable", "reason": "shutting down"}`, body)
	code, _ = b.get(t, "/healthz")
	require.Equal(t, http.StatusOK, code, "the process is still up")
}

// TestDatabaseDown: with the database out of reach, /readyz fails once the
// health check has noticed, and /metrics still answers, counting the
// failed lease query.
func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	b := serveHTTP(t, ledgertest.Replica(t, ledgertest.Store(t, ledger.Config{}), ledger.Config{}))
	code, _ := b.get(t, "/readyz")
	require.Equal(t, http.StatusOK, code)

	b.ledger.Pool.Close()
	var body string
	require.Eventually(t, func() bool {
		code, body = b.get(t, "/readyz")
		return code == http.StatusServiceUnavailable
	}, time.Minute, 10*time.Millisecond, "the health check notices")
	require.JSONEq(t, `{"status": "unavailable", "reason": "database unreachable"}`, body)
	require.Contains(t, b.log.String(), `"msg":"database health check failed: reporting NOT_SERVING"`)

	code, metrics := b.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, metrics, "ledgerd_lease_stats_errors_total 1\n")
	require.NotContains(t, metrics, "ledgerd_lease_stats_age_seconds", "no query has succeeded")
	require.Contains(t, metrics, "ledgerd_db_pool_max_conns ")

	code, answer := b.call(t, "Lookup", `{"namespace": "ns", "key": "k"}`)
	requireHTTPError(t, http.StatusServiceUnavailable, 14, server.ReasonUnavailable, code, answer)
}
