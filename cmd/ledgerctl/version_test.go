package main

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/version"
)

// TestVersion checks what `ledgerctl version` and `ledgerctl --version`
// print, with or without global flags before them: the build
// internal/version reports, without calling any ledgerd.
func TestVersion(t *testing.T) {
	t.Parallel()
	build := version.Get()
	want := "ledgerctl " + build.Version + "\n" +
		"commit:     " + build.Commit + "\n" +
		"built:      " + build.BuildDate + "\n" +
		"go:         " + runtime.Version() + "\n"
	for _, args := range [][]string{
		{"version"},
		{"--version"},
		{"-version"},
		{"--addr", "127.0.0.1:1", "version"},
		{"--addr", "127.0.0.1:1", "--version"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
		require.Equal(t, exitOK, code, "%v: %s", args, stderr.String())
		require.Equal(t, want, stdout.String(), "%v", args)
		require.Empty(t, stderr.String(), "%v", args)
	}
}
