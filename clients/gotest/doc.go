// Package gotest holds the Go client's tests against a live ledgerd: an
// in-process server over the test PostgreSQL, one schema per test. They
// live here, in the server's module, rather than next to the client
// (clients/go/ledgerclient), because the client is a module of its own
// whose consumers must not inherit the server's dependencies (pgx, goose,
// prometheus, grpc-gateway); a test file in the client's module that
// started a server would add them to its go.mod. The client's own module
// keeps its unit tests, which need no server.
package gotest
