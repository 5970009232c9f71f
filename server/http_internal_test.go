package server

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"127.0.0.1:7070": "127.0.0.1:7070",
		"10.1.2.3:7070":  "10.1.2.3:7070",
		"db.local:7070":  "db.local:7070",
		"0.0.0.0:7070":   "127.0.0.1:7070",
		":7070":          "127.0.0.1:7070",
		"[::]:7070":      "[::1]:7070",
	} {
		got, err := loopback(addr)
		require.NoError(t, err, addr)
		require.Equal(t, want, got, addr)
	}
	_, err := loopback("7070")
	require.ErrorContains(t, err, `gRPC address "7070"`)
}

func TestNamespaceLabelsAreBounded(t *testing.T) {
	t.Parallel()
	labels := newLabelSet(2, func(string) {})
	require.Equal(t, "a", labels.label("a"))
	require.Equal(t, "b", labels.label("b"))
	require.Equal(t, otherNamespace, labels.label("c"), "beyond the bound")
	require.Equal(t, "a", labels.label("a"), "known values keep their label")
}
