package version_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// TestMakeBuildStamps builds ledgerd and ledgerctl with `make build`, as a
// user does, into a temporary directory, and checks that both print what
// was stamped: the VERSION given, the commit the checkout is at (when it is
// a git checkout), and SOURCE_DATE_EPOCH as the build date.
func TestMakeBuildStamps(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	root, err := devcluster.ModuleRoot()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // a cold build cache
	defer cancel()

	binDir := t.TempDir()
	const sourceDateEpoch = "1700000000" // 2023-11-14T22:13:20Z
	build := exec.CommandContext(ctx, "make", "--no-print-directory", "build", "VERSION=v1.2.3-test.1", "BIN_DIR="+binDir)
	build.Dir = root
	// Not the settings of a make that runs this test (make test): its
	// jobserver and command-line variables are not this make's.
	for _, v := range os.Environ() {
		if name, _, _ := strings.Cut(v, "="); name != "MAKEFLAGS" && name != "MFLAGS" && name != "MAKELEVEL" && name != "SOURCE_DATE_EPOCH" {
			build.Env = append(build.Env, v)
		}
	}
	build.Env = append(build.Env, "SOURCE_DATE_EPOCH="+sourceDateEpoch)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "make build:\n%s", out)

	wantCommit := ""
	if head, err := gitOutput(ctx, root, "rev-parse", "HEAD"); err == nil {
		wantCommit = head
	}
	for _, program := range []string{"ledgerd", "ledgerctl"} {
		for _, arg := range []string{"version", "--version"} {
			out, err := exec.CommandContext(ctx, filepath.Join(binDir, program), arg).Output()
			require.NoError(t, err, "%s %s", program, arg)
			lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			require.Len(t, lines, 4, "%s %s:\n%s", program, arg, out)
			require.Equal(t, program+" v1.2.3-test.1", lines[0])
			require.Equal(t, "built:      2023-11-14T22:13:20Z", lines[2])
			require.Regexp(t, `^go:         go1\.`, lines[3])
			commit, ok := strings.CutPrefix(lines[1], "commit:     ")
			require.True(t, ok, lines[1])
			if wantCommit != "" {
				// -dirty follows when the work tree has changes.
				require.Contains(t, []string{wantCommit, wantCommit + "-dirty"}, commit)
			} else {
				require.Equal(t, "unknown", commit)
			}
		}
	}
}

// gitOutput runs git in dir and returns its output without the newline.
func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}
