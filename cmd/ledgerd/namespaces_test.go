package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNamespacePolicyFlags: the retention bounds, the admin event
// retention, auto-creation (off unless --insecure-dev, which turns it on
// unless it is given) and the cap per pattern reach the ledger's
// configuration, and inconsistent values are refused at start-up.
func TestNamespacePolicyFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseConfig("serve", []string{"--database-url", "postgres://x/y"}, env(nil), &stderr)
	require.NoError(t, err)
	require.True(t, cfg.Ledger.NoAutoCreateNamespaces, "secure by default")
	require.Equal(t, 100, cfg.Ledger.MaxNamespacesPerPattern)
	require.Equal(t, 365*24*time.Hour, cfg.Ledger.AdminEventRetention)
	require.Equal(t, 7*24*time.Hour, cfg.Ledger.Limits.MinEventRetention)
	require.Equal(t, 365*24*time.Hour, cfg.Ledger.Limits.MaxRetention)

	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--insecure-dev"}, env(nil), &stderr)
	require.NoError(t, err)
	require.False(t, cfg.Ledger.NoAutoCreateNamespaces, "development mode creates namespaces on first use")
	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--insecure-dev"},
		env(map[string]string{"LEDGER_AUTO_CREATE_NAMESPACES": "false"}), &stderr)
	require.NoError(t, err)
	require.True(t, cfg.Ledger.NoAutoCreateNamespaces, "unless told otherwise")
	cfg, err = parseConfig("serve", []string{"--database-url", "postgres://x/y", "--auto-create-namespaces", "--max-namespaces-per-pattern", "0",
		"--min-event-retention", "24h", "--admin-event-retention", "2160h", "--max-retention", "720h", "--max-event-retention", "1440h"}, env(nil), &stderr)
	require.NoError(t, err)
	require.False(t, cfg.Ledger.NoAutoCreateNamespaces)
	require.Zero(t, cfg.Ledger.MaxNamespacesPerPattern)
	require.Equal(t, 90*24*time.Hour, cfg.Ledger.AdminEventRetention)
	require.Equal(t, 24*time.Hour, cfg.Ledger.Limits.MinEventRetention)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-namespaces-per-pattern", "-1"}, "--max-namespaces-per-pattern must not be negative"},
		{[]string{"--retention", "2160h"}, "EventRetention 720h0m0s is below Retention 2160h0m0s"},
		{[]string{"--event-retention", "24h"}, "EventRetention 24h0m0s is below the server's floor 168h0m0s"},
		{[]string{"--max-retention", "24h"}, "Retention 168h0m0s is above the server's ceiling 24h0m0s"},
		{[]string{"--admin-event-retention", "24h"}, "AdminEventRetention 24h0m0s is below MinEventRetention 168h0m0s"},
		{[]string{"--max-event-retention", "24h"}, "MaxEventRetention 24h0m0s is below MinEventRetention 168h0m0s"},
	} {
		_, err := parseConfig("serve", append([]string{"--database-url", "postgres://x/y"}, c.args...), env(nil), &stderr)
		require.ErrorContains(t, err, c.want, "%v", c.args)
	}
}
