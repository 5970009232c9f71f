package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// detail returns the error answer's detail of the given type, or nil.
func detail(answer map[string]any, typ string) map[string]any {
	details, _ := answer["details"].([]any)
	for _, d := range details {
		if m, ok := d.(map[string]any); ok && m["@type"] == "type.googleapis.com/"+typ {
			return m
		}
	}
	return nil
}

// TestQuotaRefusals checks what a caller over a quota gets: RESOURCE_EXHAUSTED
// with reason QUOTA_EXCEEDED and the quota in the metadata, a RetryInfo for
// held leases only, the refusals counted, and the usage in GetNamespace.
func TestQuotaRefusals(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)
	// Entry a stores 3 bytes (key a, owner w1), and so would b: then a
	// 1-byte result fits, not 4.
	leases, storedBytes := int64(1), int64(6)
	_, err := b.ledger.Store.CreateNamespace(context.Background(), "q",
		ledger.NamespaceUpdate{MaxHeldLeases: &leases, MaxStoredBytes: &storedBytes}, "test")
	require.NoError(t, err)

	b.ok(t, "Reserve", `{"namespace": "q", "key": "a", "owner": "w1", "leaseTtl": "3600s"}`)
	code, answer := b.call(t, "Reserve", `{"namespace": "q", "key": "b", "owner": "w1"}`)
	requireHTTPError(t, http.StatusTooManyRequests, 8, "QUOTA_EXCEEDED", code, answer)
	info := detail(answer, "google.rpc.ErrorInfo")
	requestID := info["metadata"].(map[string]any)["request_id"]
	require.Regexp(t, madeID, requestID)
	require.Equal(t, map[string]any{"namespace": "q", "quota": "max_held_leases", "limit": "1", "usage": "2", "request_id": requestID}, info["metadata"])
	require.Equal(t, map[string]any{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
		detail(answer, "google.rpc.RetryInfo"))

	code, answer = b.call(t, "Complete", `{"namespace": "q", "key": "a", "fencingToken": "1", "result": "b2tvaw=="}`)
	requireHTTPError(t, http.StatusTooManyRequests, 8, "QUOTA_EXCEEDED", code, answer)
	require.Equal(t, "max_stored_bytes", detail(answer, "google.rpc.ErrorInfo")["metadata"].(map[string]any)["quota"])
	require.Nil(t, detail(answer, "google.rpc.RetryInfo"), "waiting does not free stored bytes")
	b.ok(t, "Complete", `{"namespace": "q", "key": "a", "fencingToken": "1", "result": "bw=="}`)

	res, err := http.Post(b.url+"/ledger.v1.LedgerAdminService/GetNamespace", "application/json", strings.NewReader(`{"name": "q"}`))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var got map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&got))
	require.Equal(t, "1", got["namespace"].(map[string]any)["maxHeldLeases"])
	require.Equal(t, "6", got["namespace"].(map[string]any)["maxStoredBytes"])
	require.Equal(t, map[string]any{"heldLeases": "0", "expiredLeases": "0", "storedBytes": "4"}, got["usage"])

	_, metrics := b.get(t, "/metrics")
	require.Contains(t, metrics, `ledgerd_quota_refusals_total{method="Reserve",namespace="q"} 1`+"\n")
	require.Contains(t, metrics, `ledgerd_quota_refusals_total{method="Complete",namespace="q"} 1`+"\n")
}
