package conformance_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestControlServer drives the control server as a runner would, so that a
// failing scenario points at a client, not at the harness.
func TestControlServer(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	base := startControl(t, c, "conf-self-")
	call := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var reader io.Reader
		if body != nil {
			data, err := json.Marshal(body)
			require.NoError(t, err)
			reader = bytes.NewReader(data)
		}
		req, err := http.NewRequest(method, base+path, reader)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var answer map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
		return resp.StatusCode, answer
	}
	entry := func(key string) (int, map[string]any) {
		t.Helper()
		return call("GET", "/entry?namespace=conf-self-ns&key="+url.QueryEscape(key), nil)
	}

	status, answer := entry("k1")
	require.Equal(t, http.StatusNotFound, status, answer)

	// A hold finished by a completion: the key is held at once, completed later.
	status, answer = call("POST", "/hold", map[string]any{"namespace": "ns", "key": "k1", "owner": "holder", "after_ms": 200, "then": "complete", "result": "theirs"})
	require.Equal(t, http.StatusOK, status, answer)
	status, answer = entry("k1")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "leased", answer["state"])
	require.Equal(t, "holder", answer["owner"])
	require.Eventually(t, func() bool { _, answer := entry("k1"); return answer["state"] == "completed" }, 30*time.Second, 20*time.Millisecond)
	_, answer = entry("k1")
	require.Equal(t, "theirs", answer["result"])
	require.InDelta(t, 1, answer["attempts"], 0)

	// A held key cannot be held again; the answer says why.
	status, answer = call("POST", "/hold", map[string]any{"namespace": "conf-self-ns", "key": "k1", "after_ms": 10, "then": "release"})
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, answer["error"], "not free")

	// Another worker completes a key at once.
	status, answer = call("POST", "/complete_other", map[string]any{"namespace": "ns", "key": "k2", "result": "other's"})
	require.Equal(t, http.StatusOK, status, answer)
	_, answer = entry("k2")
	require.Equal(t, "completed", answer["state"])
	require.Equal(t, "other", answer["owner"])
	require.Equal(t, "other's", answer["result"])

	// A steal takes a held key over with a higher token.
	status, answer = call("POST", "/hold", map[string]any{"namespace": "ns", "key": "k3", "after_ms": 60000, "then": "release"})
	require.Equal(t, http.StatusOK, status, answer)
	held := answer["fencing_token"].(float64)
	status, answer = call("POST", "/steal", map[string]any{"namespace": "conf-self-ns", "key": "k3"})
	require.Equal(t, http.StatusOK, status, answer)
	require.Greater(t, answer["fencing_token"].(float64), held)
	_, answer = entry("k3")
	require.Equal(t, "thief", answer["owner"])
	require.InDelta(t, 2, answer["attempts"], 0)

	// The proxy refuses connections while down.
	status, _ = call("POST", "/proxy/down", nil)
	require.Equal(t, http.StatusOK, status)
	require.True(t, proxyRefuses(t, c.proxy.Addr()), "the proxy is down")
	status, _ = call("POST", "/proxy/up", nil)
	require.Equal(t, http.StatusOK, status)

	// Call counters: expectations that do not hold answer 409 with the count.
	status, _ = call("POST", "/calls/reset", nil)
	require.Equal(t, http.StatusOK, status)
	status, answer = call("POST", "/replica/b/expect_calls", map[string]any{"max": 0})
	require.Equal(t, http.StatusOK, status, answer)
	status, answer = call("POST", "/replica/b/expect_calls", map[string]any{"min": 1})
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, answer["error"], "replica b served 0 ledger calls")

	// A replica stops and starts again on the same address; a lame duck is
	// replaced by a serving replica.
	addr := c.replicas["b"].addr
	for _, action := range []string{"stop", "expect_stopped", "start", "not_serving", "serving"} {
		status, answer = call("POST", "/replica/b/"+action, nil)
		require.Equal(t, http.StatusOK, status, "%s: %v", action, answer)
	}
	require.Equal(t, addr, c.replicas["b"].addr)

	// Reset undoes what a scenario that failed halfway left behind.
	for _, path := range []string{"/proxy/down", "/replica/a/not_serving", "/replica/b/stop", "/reset"} {
		status, answer = call("POST", path, nil)
		require.Equal(t, http.StatusOK, status, "%s: %v", path, answer)
	}
	require.False(t, proxyRefuses(t, c.proxy.Addr()), "the proxy is up")
	for name, rep := range c.replicas {
		rep.mu.Lock()
		require.True(t, rep.srv != nil && !rep.lameDuck, "replica %s serves", name)
		rep.mu.Unlock()
	}

	// A typo in a body fails instead of being ignored.
	status, answer = call("POST", "/hold", map[string]any{"namespace": "ns", "key": "k4", "then": "complete", "afer_ms": 10})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, answer["error"], "afer_ms")
}

// proxyRefuses reports whether a connection through the proxy is closed
// without an answer to an HTTP/2 client preface (a replica answers it with
// its SETTINGS).
func proxyRefuses(t *testing.T, addr string) bool {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return true
	}
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	emptySettings := []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}
	if _, err := conn.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), emptySettings...)); err != nil {
		return true
	}
	_, err = conn.Read(make([]byte, 1))
	return err != nil
}
