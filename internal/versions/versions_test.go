package versions_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/versions"
)

// repoRoot is the repository's root, found from this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TestEveryPackageSaysVERSION fails when the server, a client or the Helm
// chart states another version than VERSION.
func TestEveryPackageSaysVERSION(t *testing.T) {
	t.Parallel()
	require.NoError(t, versions.Check(repoRoot()))
	found, err := versions.Find(repoRoot())
	require.NoError(t, err)
	for _, f := range found {
		t.Logf("%s (%s): %s", f.Place.Name, f.File, f.Version)
	}
}

// TestSetRewritesOnlyTheVersions runs Set over a copy of every file that
// states the version: afterwards each says the new version, and nothing
// else in them changed.
func TestSetRewritesOnlyTheVersions(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	found, err := versions.Find(repoRoot())
	require.NoError(t, err)
	originals := map[string]string{}
	for _, f := range found {
		data, err := os.ReadFile(filepath.Join(repoRoot(), f.File))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(root, filepath.Dir(f.File)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, f.File), data, 0o644))
		originals[f.File] = string(data)
	}
	old := found[0].Version

	require.NoError(t, versions.Set(root, "12.34.56"))
	require.NoError(t, versions.Check(root))
	again, err := versions.Find(root)
	require.NoError(t, err)
	for _, f := range again {
		require.Equal(t, "12.34.56", f.Version, f.Place.Name)
	}
	// Setting the old version back restores every file byte for byte.
	require.NoError(t, versions.Set(root, old))
	for file, original := range originals {
		data, err := os.ReadFile(filepath.Join(root, file))
		require.NoError(t, err)
		require.Equal(t, original, string(data), file)
	}
}

// TestCheckNamesTheStalePlace: a place left behind is named, with the fix.
func TestCheckNamesTheStalePlace(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	found, err := versions.Find(repoRoot())
	require.NoError(t, err)
	for _, f := range found {
		data, err := os.ReadFile(filepath.Join(repoRoot(), f.File))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(root, filepath.Dir(f.File)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, f.File), data, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, versions.File), []byte("9.9.9\n"), 0o644))
	err = versions.Check(root)
	require.ErrorContains(t, err, "VERSION says 9.9.9")
	require.ErrorContains(t, err, "the Helm chart's appVersion (deploy/helm/ledgerd/Chart.yaml) says "+found[0].Version)
	require.ErrorContains(t, err, "make set-version V=9.9.9")
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"0.1.0", "1.0.0", "10.20.30"} {
		require.NoError(t, versions.Validate(ok), ok)
	}
	for _, bad := range []string{"", "1.0", "v1.0.0", "1.0.0-rc.1", "01.0.0", "1.0.0 "} {
		require.ErrorContains(t, versions.Validate(bad), "must be MAJOR.MINOR.PATCH", bad)
	}
}
