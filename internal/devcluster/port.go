package devcluster

import (
	"fmt"
	"net"
)

// startAttempts is how often StartPostgres and StartLedgerd try to start a
// process, each time on a new free port, when another process took the port
// between the probe and the bind.
const startAttempts = 3

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
