package main

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/version"
)

// TestVersion checks what `ledgerd version` and `ledgerd --version` print:
// the build internal/version reports, one field a line, the name and
// version first.
func TestVersion(t *testing.T) {
	t.Parallel()
	build := version.Get()
	want := "ledgerd " + build.Version + "\n" +
		"commit:     " + build.Commit + "\n" +
		"built:      " + build.BuildDate + "\n" +
		"go:         " + runtime.Version() + "\n"
	for _, arg := range []string{"version", "--version", "-version"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			require.NoError(t, run(context.Background(), []string{arg}, env(nil), &stdout, &stderr))
			require.Equal(t, want, stdout.String())
			require.Empty(t, stderr.String())
		})
	}
}
