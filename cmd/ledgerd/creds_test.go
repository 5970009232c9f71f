package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/server"
)

// TestCredentialFlags: --max-token-ttl (both commands) and the failed
// authentication limit, with their defaults; 0 turns each off.
func TestCredentialFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseServe(nil, nil)
	require.NoError(t, err)
	require.Equal(t, 90*24*time.Hour, cfg.Ledger.MaxTokenTTL)
	require.Equal(t, server.Rate{PerSecond: 5, Burst: 50}, cfg.FailedAuthLimit)

	cfg, err = parseServe([]string{"--max-token-ttl", "0", "--auth-failure-rate", "0"}, nil)
	require.NoError(t, err)
	require.Negative(t, cfg.Ledger.MaxTokenTTL, "no maximum")
	require.Negative(t, cfg.FailedAuthLimit.PerSecond, "no limit")

	cfg, err = parseServe(nil, map[string]string{"LEDGER_MAX_TOKEN_TTL": "720h", "LEDGER_AUTH_FAILURE_BURST": "7"})
	require.NoError(t, err)
	require.Equal(t, 720*time.Hour, cfg.Ledger.MaxTokenTTL)
	require.Equal(t, 7, cfg.FailedAuthLimit.Burst)

	for _, args := range [][]string{
		{"--max-token-ttl", "-1h"}, {"--auth-failure-rate", "-1"}, {"--auth-failure-burst", "0"},
	} {
		_, err := parseServe(args, nil)
		require.ErrorContains(t, err, args[0])
	}
}

// TestBootstrapTokenFollowsMaxTokenTTL: the bootstrap token lives for
// --max-token-ttl, like any token created without a ttl.
func TestBootstrapTokenFollowsMaxTokenTTL(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	var out, errOut ledgertest.LogBuffer
	err := run(context.Background(), []string{"bootstrap", "--principal", "root", "--database-url", url, "--max-token-ttl", "48h"}, env(nil), &out, &errOut)
	require.NoError(t, err, errOut.String())
	require.Regexp(t, `ldg_[0-9a-f]+_[A-Za-z0-9_-]+`, out.String())

	var expires time.Time
	require.NoError(t, ledgertest.Pool(t, url).QueryRow(context.Background(), `SELECT expires_at FROM api_tokens`).Scan(&expires))
	require.WithinDuration(t, time.Now().Add(48*time.Hour), expires, time.Minute)
}
