package server_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/version"
)

// TestBuildInfoMetric checks that /metrics names the build that serves, as
// internal/version reports it, in one ledgerd_build_info series of value 1.
func TestBuildInfoMetric(t *testing.T) {
	t.Parallel()
	b := setupHTTP(t)

	code, metrics := b.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	build := version.Get()
	require.NotEmpty(t, build.GoVersion)
	// The text format sorts the labels by name.
	want := fmt.Sprintf("ledgerd_build_info{build_date=%q,commit=%q,go_version=%q,version=%q} 1\n",
		build.BuildDate, build.Commit, build.GoVersion, build.Version)
	require.Contains(t, metrics, want, "in:\n%s", metrics)
	require.Contains(t, metrics, "# TYPE ledgerd_build_info gauge\n")
}
