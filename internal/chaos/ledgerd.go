package chaos

import "time"

// Timeouts of the ledgerd processes the harness runs. Requests carry the
// client's attempt deadline (see Config.AttemptTimeout); the statement
// timeout bounds a statement that the database holds.
const (
	ledgerdStatementTimeout = 2 * time.Second
	ledgerdShutdownTimeout  = 10 * time.Second
	// ledgerdReadyTimeout bounds a ledgerd's start, until its health
	// service answers SERVING: the first start, and each after a fault.
	ledgerdReadyTimeout = 30 * time.Second
)

// ledgerdArgs are the flags of every `ledgerd serve` the harness starts,
// before Config.LedgerdArgs: no authentication and no HTTP port, short
// leases, no sweeper, and the JSON request log that the checker reads
// for deadline overruns.
func ledgerdArgs() []string {
	return []string{
		"--insecure-dev",
		"--http-addr", "off",
		"--db-max-conns", "8",
		"--db-statement-timeout", ledgerdStatementTimeout.String(),
		"--shutdown-timeout", ledgerdShutdownTimeout.String(),
		"--request-timeout", "5s",
		"--min-lease-ttl", "100ms",
		"--sweep-interval", "0",
		"--log-format", "json",
	}
}
