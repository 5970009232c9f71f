package version

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFillFromBuildInfo checks the fall-back on what the toolchain records,
// for a binary that `go build` made without the linker's stamps: the
// stamps win, then the module version and vcs settings.
func TestFillFromBuildInfo(t *testing.T) {
	t.Parallel()
	vcs := &debug.BuildInfo{
		Main: debug.Module{Version: "v0.0.0-20250102030405-0a70d04f4387"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0a70d04f43875919376945f550a6e53ee024ace0"},
			{Key: "vcs.time", Value: "2025-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: "false"},
		},
	}
	for _, tc := range []struct {
		name    string
		stamped Info
		build   *debug.BuildInfo
		want    Info
	}{{
		name:  "unstamped, with vcs",
		build: vcs,
		want:  Info{Version: "v0.0.0-20250102030405-0a70d04f4387", Commit: "0a70d04f43875919376945f550a6e53ee024ace0", BuildDate: "2025-01-02T03:04:05Z"},
	}, {
		name: "unstamped, modified work tree",
		build: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0a70d04"}, {Key: "vcs.time", Value: "2025-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
		}},
		want: Info{Commit: "0a70d04-dirty", BuildDate: "2025-01-02T03:04:05Z"},
	}, {
		name:  "unstamped, nothing recorded",
		build: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
		want:  Info{},
	}, {
		name:    "stamped",
		stamped: Info{Version: "v1.2.3", Commit: "abc", BuildDate: "2025-06-07T08:09:10Z"},
		build:   vcs,
		want:    Info{Version: "v1.2.3", Commit: "abc", BuildDate: "2025-06-07T08:09:10Z"},
	}, {
		name:    "version stamped alone",
		stamped: Info{Version: "v1.2.3"},
		build:   vcs,
		want:    Info{Version: "v1.2.3", Commit: "0a70d04f43875919376945f550a6e53ee024ace0", BuildDate: "2025-01-02T03:04:05Z"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, fillFromBuildInfo(tc.stamped, tc.build))
		})
	}
}

// TestGetDefaults checks that a test binary, which is neither stamped nor
// records a commit, still says something in every field.
func TestGetDefaults(t *testing.T) {
	t.Parallel()
	info := Get()
	require.Equal(t, Development, info.Version)
	require.NotEmpty(t, info.Commit)
	require.NotEmpty(t, info.BuildDate)
	require.Regexp(t, `^go1\.`, info.GoVersion)
}
