// Package ledger is ledgerd's domain and its PostgreSQL store: the state
// machine of docs/design.md, enforced by the statements in queries/.
//
// A pipeline step reserves a key, does the work under the lease it was
// granted, and records the outcome:
//
//	r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "etl", Key: "file-17", Owner: "host/42"})
//	switch r.Outcome {
//	case ledger.Acquired:   // do the work, Heartbeat while it runs, then:
//		_, err = store.Complete(ctx, ledger.CompleteRequest{Namespace: "etl", Key: "file-17",
//			FencingToken: r.FencingToken, Result: result})
//	case ledger.Completed:  // done before: r.Result is the stored result
//	case ledger.InProgress: // someone else holds it: retry after r.RetryAfter
//	case ledger.Failed:     // failed permanently: r.Error
//	}
//
// The rules that make it safe:
//
//   - The database clock decides: lease expiry is computed and compared by
//     PostgreSQL inside each statement.
//   - The fencing token strictly increases on every grant of a key, and
//     every call made under a lease is a compare-and-set on it: a call with
//     a token that is not current fails with ErrLeaseLost and changes
//     nothing, whatever the clock says.
//   - Every call is retry-safe: repeating it after a lost response gives the
//     same answer (same token, AlreadyCompleted, ...), or ErrResultConflict
//     when the repeat carries a different result.
//   - Each call is one transaction (most are one statement), and each state
//     change writes its audit row to the events table in the same statement.
//   - Bad input is refused with a *ValidationError before the database is
//     touched.
//
// Driver errors become ledger errors in one place (dbError): ErrNotFound,
// ErrUnavailable when the database cannot be reached.
package ledger
