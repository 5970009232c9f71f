// Package crosslang holds the cross-language tests: a live ledgerd (a real
// gRPC server on loopback, over the test PostgreSQL) driven by the Python
// and TypeScript clients' own test suites, and one key contested by a Go, a
// Python and a TypeScript worker at once. `make test` runs them; the
// runtimes' packages are installed by scripts/deps.sh.
package crosslang
