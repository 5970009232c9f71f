// Package conformance is the clients' conformance suite: scenarios written
// as data (scenarios/*.json) that the Go, Python (sync and asyncio) and
// TypeScript clients each execute against live ledgerd replicas, so that
// their do helpers, breakers, retry budgets, fallback policies and batches
// cannot drift apart.
//
// TestConformance starts, for each language, two in-process ledgerd
// replicas over one test database, a cuttable TCP proxy in front of the
// first, and a small HTTP control server; creates every scenario's
// namespace; runs the language's runner as a subprocess; and fails, per
// language and scenario, unless the runner reports the scenario ok. README.md
// describes the scenario format, the control server and how a runner is
// written.
package conformance
