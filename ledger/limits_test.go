package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestLimits breaks every limit once: each call fails with a
// *ValidationError that names the field and the limit, and the database is
// left unchanged (not even the namespace is created).
func TestLimits(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	long := func(n int) string { return strings.Repeat("x", n) }
	manyPairs := map[string]string{}
	for i := range 65 {
		manyPairs[fmt.Sprintf("k%d", i)] = "v"
	}
	reserve := func(mutate func(*ledger.ReserveRequest)) func() error {
		req := ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}
		mutate(&req)
		return func() error { _, err := b.store.Reserve(ctx, req); return err }
	}
	heartbeat := func(mutate func(*ledger.HeartbeatRequest)) func() error {
		req := ledger.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: 1}
		mutate(&req)
		return func() error { _, err := b.store.Heartbeat(ctx, req); return err }
	}
	complete := func(mutate func(*ledger.CompleteRequest)) func() error {
		req := ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 1}
		mutate(&req)
		return func() error { _, err := b.store.Complete(ctx, req); return err }
	}
	fail := func(mutate func(*ledger.FailRequest)) func() error {
		req := ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: 1, Error: &ledger.WorkError{Message: "m"}}
		mutate(&req)
		return func() error { _, err := b.store.Fail(ctx, req); return err }
	}

	cases := []struct {
		name      string
		call      func() error
		field     string
		mentioned string // the limit or rule the message must state
	}{
		{"namespace empty", reserve(func(r *ledger.ReserveRequest) { r.Namespace = "" }), "namespace", "required"},
		{"namespace too long", reserve(func(r *ledger.ReserveRequest) { r.Namespace = long(129) }), "namespace", "128 bytes"},
		{"namespace bad character", reserve(func(r *ledger.ReserveRequest) { r.Namespace = "team/a" }), "namespace", "[A-Za-z0-9]"},
		{"namespace leading dash", reserve(func(r *ledger.ReserveRequest) { r.Namespace = "-a" }), "namespace", "[A-Za-z0-9]"},
		{"key empty", reserve(func(r *ledger.ReserveRequest) { r.Key = "" }), "key", "required"},
		{"key too long", reserve(func(r *ledger.ReserveRequest) { r.Key = long(513) }), "key", "512 bytes"},
		{"key invalid UTF-8", reserve(func(r *ledger.ReserveRequest) { r.Key = "a\xffb" }), "key", "UTF-8"},
		{"key NUL", reserve(func(r *ledger.ReserveRequest) { r.Key = "a\x00b" }), "key", "NUL"},
		{"owner empty", reserve(func(r *ledger.ReserveRequest) { r.Owner = "" }), "owner", "required"},
		{"owner too long", reserve(func(r *ledger.ReserveRequest) { r.Owner = long(257) }), "owner", "256 bytes"},
		{"fingerprint too long", reserve(func(r *ledger.ReserveRequest) { r.Fingerprint = make([]byte, 257) }), "fingerprint", "256 bytes"},
		{"metadata too many pairs", reserve(func(r *ledger.ReserveRequest) { r.Metadata = manyPairs }), "metadata", "64 pairs"},
		{"metadata too big", reserve(func(r *ledger.ReserveRequest) { r.Metadata = map[string]string{"a": long(8192)} }), "metadata", "8192 bytes"},
		{"metadata key empty", reserve(func(r *ledger.ReserveRequest) { r.Metadata = map[string]string{"": "v"} }), "metadata key", "required"},
		{"metadata key too long", reserve(func(r *ledger.ReserveRequest) { r.Metadata = map[string]string{long(129): "v"} }), "metadata key", "128 bytes"},
		{"metadata value NUL", reserve(func(r *ledger.ReserveRequest) { r.Metadata = map[string]string{"k": "\x00"} }), "metadata value", "NUL"},
		{"lease TTL too short", reserve(func(r *ledger.ReserveRequest) { r.LeaseTTL = 5 * time.Millisecond }), "lease_ttl", "at least 10ms"},
		{"lease TTL negative", reserve(func(r *ledger.ReserveRequest) { r.LeaseTTL = -time.Second }), "lease_ttl", "at least 10ms"},
		{"lease TTL too long", reserve(func(r *ledger.ReserveRequest) { r.LeaseTTL = 2 * time.Hour }), "lease_ttl", "at most 1h0m0s"},
		{"heartbeat token zero", heartbeat(func(r *ledger.HeartbeatRequest) { r.FencingToken = 0 }), "fencing_token", "positive"},
		{"heartbeat checkpoint too big", heartbeat(func(r *ledger.HeartbeatRequest) { r.Checkpoint = make([]byte, 65537) }), "checkpoint", "65536 bytes"},
		{"heartbeat lease TTL too long", heartbeat(func(r *ledger.HeartbeatRequest) { r.LeaseTTL = 2 * time.Hour }), "lease_ttl", "at most 1h0m0s"},
		{"heartbeat key too long", heartbeat(func(r *ledger.HeartbeatRequest) { r.Key = long(513) }), "key", "512 bytes"},
		{"complete token negative", complete(func(r *ledger.CompleteRequest) { r.FencingToken = -1 }), "fencing_token", "positive"},
		{"complete result too big", complete(func(r *ledger.CompleteRequest) { r.Result = make([]byte, 1<<20+1) }), "result", "1048576 bytes"},
		{"fail without error", fail(func(r *ledger.FailRequest) { r.Error = nil }), "error", "required"},
		{"fail empty message", fail(func(r *ledger.FailRequest) { r.Error = &ledger.WorkError{Code: "c"} }), "error.message", "required"},
		{"fail message too long", fail(func(r *ledger.FailRequest) { r.Error = &ledger.WorkError{Message: long(8193)} }), "error.message", "8192 bytes"},
		{"fail code too long", fail(func(r *ledger.FailRequest) { r.Error = &ledger.WorkError{Code: long(129), Message: "m"} }), "error.code", "128 bytes"},
		{"release token zero", func() error {
			_, err := b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "k"})
			return err
		}, "fencing_token", "positive"},
		{"lookup namespace invalid", func() error {
			_, err := b.store.Lookup(ctx, "a b", "k")
			return err
		}, "namespace", "[A-Za-z0-9]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.ErrorIs(t, err, ledger.ErrInvalidArgument)
			var validation *ledger.ValidationError
			require.ErrorAs(t, err, &validation)
			require.Equal(t, tc.field, validation.Field)
			require.Contains(t, validation.Error(), tc.mentioned)
		})
	}
	for _, table := range []string{"entries", "events", "namespaces"} {
		require.Zero(t, b.count(t, table), "%s must be untouched", table)
	}

	// The limits at their bounds are accepted.
	r, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: long(128), Key: long(512), Owner: long(256),
		Fingerprint: make([]byte, 256), Metadata: map[string]string{"a": long(8191)}, LeaseTTL: time.Hour})
	require.NoError(t, err)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: long(128), Key: long(512), FencingToken: r.FencingToken, Result: make([]byte, 1<<20)})
	require.NoError(t, err)
}

func TestConfiguredLimits(t *testing.T) {
	t.Parallel()
	b := setupWith(t, ledger.Config{
		Limits:            ledger.Limits{MaxKeyBytes: 8},
		NamespaceDefaults: ledger.NamespaceSettings{MaxResultBytes: 4, MaxLeaseTTL: 2 * time.Minute},
	})
	ctx := context.Background()
	_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "123456789", Owner: "w"})
	require.ErrorContains(t, err, "invalid key: must be at most 8 bytes, got 9")
	r, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "12345678", Owner: "w", LeaseTTL: 2 * time.Minute})
	require.NoError(t, err)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "12345678", FencingToken: r.FencingToken, Result: []byte("12345")})
	require.ErrorContains(t, err, "invalid result: must be at most 4 bytes, got 5")
}

func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	_, err := ledger.New(nil, ledger.Config{NamespaceDefaults: ledger.NamespaceSettings{DefaultLeaseTTL: time.Hour, MaxLeaseTTL: time.Minute}})
	require.ErrorContains(t, err, "MaxLeaseTTL 1m0s is below DefaultLeaseTTL 1h0m0s")
	_, err = ledger.New(nil, ledger.Config{Limits: ledger.Limits{MaxKeyBytes: -1}})
	require.ErrorContains(t, err, "MaxKeyBytes must be positive")
}
