// Package version tells which build of ledgerd is running: its version, the
// commit it was built from, when it was built, and with which Go.
//
// `make build` (and `make image`) stamp the first three with the linker:
//
//	go build -ldflags "-X github.com/ledgerd/ledgerd/internal/version.version=v1.2.3 \
//	  -X github.com/ledgerd/ledgerd/internal/version.commit=0a70d04... \
//	  -X github.com/ledgerd/ledgerd/internal/version.buildDate=2025-01-02T03:04:05Z" ./cmd/ledgerd
//
// A plain `go build` in a git checkout is not stamped: then [Get] falls back
// on what the Go toolchain records in every binary (runtime/debug's
// vcs.revision and vcs.time, the commit's time), so that even such a build
// names its commit.
package version

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set by the linker (-X); empty in a build that was not stamped. They are
// variables, not constants, because -X can only set string variables.
var (
	version   string
	commit    string
	buildDate string
)

// Unknown is what Info says of a field that neither the linker nor the
// toolchain recorded (a `go run`, a test binary).
const Unknown = "unknown"

// Development is the version of a build that was not stamped with one and
// whose module version the toolchain did not record.
const Development = "0.0.0-dev"

// Info describes one build.
type Info struct {
	// Version is the stamped version (`git describe --tags --dirty` by
	// `make build`; VERSION's release followed by -dev in a clone without
	// tags), else the module version the toolchain recorded, else
	// Development.
	Version string
	// Commit is the full commit hash, with "-dirty" when the work tree had
	// changes; Unknown if nothing recorded it.
	Commit string
	// BuildDate is when the binary was built, RFC 3339 in UTC; in an
	// unstamped build, the commit's time instead. Unknown if nothing
	// recorded it.
	BuildDate string
	// GoVersion is the Go release that compiled the binary, e.g. go1.26.8.
	GoVersion string
}

// Get returns the running binary's build information.
func Get() Info {
	info := Info{Version: version, Commit: commit, BuildDate: buildDate, GoVersion: runtime.Version()}
	if build, ok := debug.ReadBuildInfo(); ok {
		info = fillFromBuildInfo(info, build)
	}
	if info.Version == "" {
		info.Version = Development
	}
	if info.Commit == "" {
		info.Commit = Unknown
	}
	if info.BuildDate == "" {
		info.BuildDate = Unknown
	}
	return info
}

// fillFromBuildInfo fills the fields the linker left empty from what the
// toolchain recorded.
func fillFromBuildInfo(info Info, build *debug.BuildInfo) Info {
	// "(devel)" is what a build outside a module version control says.
	if info.Version == "" && build.Main.Version != "" && build.Main.Version != "(devel)" {
		info.Version = build.Main.Version
	}
	settings := map[string]string{}
	for _, s := range build.Settings {
		settings[s.Key] = s.Value
	}
	if info.Commit == "" && settings["vcs.revision"] != "" {
		info.Commit = settings["vcs.revision"]
		if settings["vcs.modified"] == "true" {
			info.Commit += "-dirty"
		}
	}
	if info.BuildDate == "" {
		info.BuildDate = settings["vcs.time"]
	}
	return info
}

// Write prints info for the version commands, program's name and version
// first, as `ledgerd version` and `ledgerctl version` show it:
//
//	ledgerd v1.2.3
//	commit:     0a70d04...
//	built:      2025-01-02T03:04:05Z
//	go:         go1.26.8
func Write(w io.Writer, program string, info Info) error {
	_, err := fmt.Fprintf(w, "%s %s\ncommit:     %s\nbuilt:      %s\ngo:         %s\n",
		program, info.Version, info.Commit, info.BuildDate, info.GoVersion)
	return err
}
