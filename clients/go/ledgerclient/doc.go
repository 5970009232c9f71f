// Package ledgerclient is the Go client of ledgerd, the central idempotency
// ledger. Its Do method wraps a pipeline step so that, for each idempotency
// key, the result of one successful run is recorded, whatever the number of
// workers and retries, and replayed to every later call.
//
// # Connecting
//
// Make one Client per process and share it:
//
//	client, err := ledgerclient.New("ledgerd.internal:7400",
//		ledgerclient.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
//	if err != nil {
//		return err
//	}
//	defer client.Close()
//
// Use WithInsecure instead for a local ledgerd during development, and
// NewFromConn to use a gRPC connection you already have.
//
// # Doing the work once
//
// Wrap the step in Do, with a namespace (your pipeline) and a key that
// names the unit of work:
//
//	result, err := client.Do(ctx, "billing", "invoice-2024-0042",
//		func(ctx context.Context) ([]byte, error) {
//			receipt, err := charge(ctx, invoice)
//			if err != nil {
//				return nil, err // retryable: the next Do runs the step again
//			}
//			return receipt, nil // recorded, and replayed to every later Do
//		})
//
// The first Do of a key runs the function and records what it returns.
// Every later Do of the key, from any worker, returns the recorded value
// with result.Replayed set and does not run the function. While one worker
// runs it, the others wait for its result. If the worker dies, its lease
// runs out and another one takes the key over.
//
// # Failures
//
// An error from the function is recorded as retryable: the key is released
// and the next Do runs the function again. Mark errors that retrying cannot
// fix with Permanent; the key then fails for good, and every later Do
// returns a *FailedError (errors.Is(err, ErrFailed)) without running it.
//
// Errors from ledgerd are *Error values that match one sentinel per reason
// (the reasons are the names of ledgerv1.ErrorReason, defined with their
// meaning in error_reason.proto):
//
//	switch {
//	case errors.Is(err, ledgerclient.ErrFingerprintMismatch):
//		// same key, different request: a bug upstream
//	case errors.Is(err, ledgerclient.ErrLeaseLost):
//		// another worker took over; this one's result was not recorded
//	}
//
// The client retries calls while ledgerd or its database is unavailable,
// until the context ends: give ctx a deadline to bound Do.
//
// # Fencing tokens and checkpoints
//
// The function's context carries its lease: LeaseFromContext returns the
// fencing token, which grows with every grant of the key. Pass it to the
// systems the step writes to, so that they can refuse a write from a worker
// that was taken over (an older token). SetCheckpoint stores progress with
// the lease's heartbeats; a worker that takes the key over finds it in its
// Lease and can resume instead of starting over:
//
//	lease, _ := ledgerclient.LeaseFromContext(ctx)
//	offset := parseOffset(lease.Checkpoint)
//	for ; offset < len(rows); offset++ {
//		if err := sink.Write(ctx, lease.FencingToken, rows[offset]); err != nil {
//			return nil, err
//		}
//		_ = ledgerclient.SetCheckpoint(ctx, formatOffset(offset+1))
//	}
//
// The lower-level methods (Reserve, Heartbeat, Complete, Fail, Release,
// Lookup) take and return the generated ledgerv1 messages, for callers that
// drive the lease themselves or inspect a key.
package ledgerclient
