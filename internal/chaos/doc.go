// Package chaos is ledgerd's fault-injection harness: it proves, Jepsen
// style, that the ledger's promises hold while workers, ledgerd replicas
// and PostgreSQL crash, pause and restart.
//
// A run starts its own PostgreSQL cluster and two ledgerd processes on
// 127.0.0.1 (with internal/devcluster), each behind a loopback TCP proxy
// that can drop responses. Workers — goroutines of the harness and separate
// worker processes — take keys through the Go client (ledgerclient.Do, or bare
// Reserve and Complete calls), and their work writes to a fenced sink (a
// table that refuses a write whose fencing token is lower than the highest
// it has accepted for the key) and to an unfenced control sink. Every RPC
// attempt is recorded in a history with its invocation and its outcome:
// ok, failed (a definite answer that changed nothing) or indeterminate
// (no answer, a deadline, UNAVAILABLE).
//
// A scenario runs the workers while one nemesis injects faults over and
// over (see Scenarios); then the checker reads the final ledger (through
// the API and with SQL), the audit events and both sinks, and reports
// duplicates, lost acknowledgements and stale tokens that were accepted.
// A scenario passes with none of them. The definitions are in
// docs/reliability.md and on Check.
//
// The harness runs with `make chaos` (cmd/ledgerchaos); a short mix runs
// in `go test`, once as ledgerd runs by default and once with its
// --no-coalesce flag (Config.LedgerdArgs).
package chaos
