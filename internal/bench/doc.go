// Package bench is the engine of cmd/ledgerbench: it drives named workloads
// with N concurrent workers against a ledgerd over gRPC and, in the same run,
// the very SQL statements ledgerd issues for them directly against the same
// PostgreSQL with the same concurrency (the raw-SQL baseline), and reports
// throughput, latency percentiles and the ledgerd / raw ratio of each.
//
// A run is described by a Config (see its fields for the defaults) and
// performed by Run. The workloads are in workloads.go: each has a ledgerd
// side (gRPC calls) and a raw side (pgx calls of the statements returned by
// ledger.Statement), and a new one is one entry in the registry.
//
// The figures are only as honest as the database under them: Run reports
// PostgreSQL's fsync and synchronous_commit settings with the results, and
// the private cluster it starts when given no database keeps both on.
package bench
