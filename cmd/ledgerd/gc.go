package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the garbage collector's GOGC for ledgerd when the
// environment sets none. ledgerd's live heap is small (a few MiB at rest,
// tens of MiB under load) while it allocates for every call, so at Go's
// default of 100 it collected many times a second and spent a fifth of its
// CPU doing so. At 400, on two cores at 64 workers, its CPU per Lookup fell
// from 46 to 25 µs and per pair from 117 to 81 µs, for tens of MiB more
// (docs/performance.md). GOGC in the environment wins, and GOMEMLIMIT
// (which the Helm chart sets to the container's memory limit) bounds the
// heap whatever GOGC says.
const defaultGCPercent = 400

// setGCPercent applies defaultGCPercent unless GOGC is set.
func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}
