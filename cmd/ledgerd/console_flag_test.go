package main

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// TestConsoleSetting: the console is on by default, and --console=false,
// LEDGER_CONSOLE=false or "console: false" in the file turns it off.
func TestConsoleSetting(t *testing.T) {
	t.Parallel()
	cfg, err := parseServe(nil, nil)
	require.NoError(t, err)
	require.True(t, cfg.Console)
	cfg, err = parseServe([]string{"--console=false"}, nil)
	require.NoError(t, err)
	require.False(t, cfg.Console)
	cfg, err = parseServe(nil, map[string]string{"LEDGER_CONSOLE": "false"})
	require.NoError(t, err)
	require.False(t, cfg.Console)
	cfg, err = parseServe([]string{"--config", writeConfig(t, "console: false\n")}, nil)
	require.NoError(t, err)
	require.False(t, cfg.Console)
	require.Equal(t, fromFile, sourceOf(t, cfg, "console"))
}

// TestServeConsole: `ledgerd serve` serves the console under /ui/ on its
// HTTP port, and not with --console=false.
func TestServeConsole(t *testing.T) {
	t.Parallel()
	on := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t)})
	code, body := on.get(t, "/ui/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `src="js/app.js"`)

	off := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_CONSOLE": "false"})
	code, _ = off.get(t, "/ui/")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = off.get(t, "/healthz")
	require.Equal(t, http.StatusOK, code)
}
