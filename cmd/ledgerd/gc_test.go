package main

import (
	"os"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGCPercent: ledgerd collects at defaultGCPercent unless GOGC is set,
// and then leaves Go's own setting alone.
func TestGCPercent(t *testing.T) {
	original := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(original) })

	t.Setenv("GOGC", "")
	require.NoError(t, os.Unsetenv("GOGC"))
	setGCPercent()
	require.Equal(t, defaultGCPercent, debug.SetGCPercent(100), "no GOGC: the default")

	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150) // what the runtime read from GOGC at start-up
	setGCPercent()
	require.Equal(t, 150, debug.SetGCPercent(100), "GOGC set: left as it is")
}
