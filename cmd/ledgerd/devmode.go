package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// Development mode (--insecure-dev) serves without authentication: every
// caller is a platform admin. On a database that ledgerd replicas with
// authentication also use, that would hand the whole shared ledger to
// whoever reaches a loopback port, and a token minted there would work on
// every secure replica. So development mode serves only a database that
// holds no credentials at all: it refuses to start on one that holds a
// token or a role binding, it checks again every --auth-refresh-interval
// while it serves and stops if one appears, and it refuses the token and
// role RPCs (see server.Config.Auth), so that it cannot create any itself.

// sharedDatabaseError is the refusal of a database that holds credentials,
// in development mode.
type sharedDatabaseError struct {
	database         string // as describeDatabase names it
	tokens, bindings int64
}

func (e *sharedDatabaseError) Error() string {
	return fmt.Sprintf("--insecure-dev serves without authentication, but %s holds %d API tokens and %d role bindings, "+
		"so ledgerd replicas with authentication use it, and this one would let any local caller act on all of it. "+
		"Point --database-url at a database of its own (make run starts a private one), or serve with authentication (without --insecure-dev)",
		e.database, e.tokens, e.bindings)
}

// checkDevelopmentDatabase returns a *sharedDatabaseError if the store's
// database holds any token or role binding, the error of the count if it
// fails, and nil otherwise.
func checkDevelopmentDatabase(ctx context.Context, store *ledger.Store, database string) error {
	tokens, bindings, err := store.CredentialCounts(ctx)
	if err != nil {
		return err
	}
	if tokens > 0 || bindings > 0 {
		return &sharedDatabaseError{database: database, tokens: tokens, bindings: bindings}
	}
	return nil
}

// watchDevelopmentDatabase checks the database every interval while a
// development-mode ledgerd serves, and calls stop with the refusal, then
// returns, as soon as the database holds credentials: a secure replica
// bootstrapped on it after this one started. A failed count (the database
// out of reach) is not a refusal; the next check tries again.
func watchDevelopmentDatabase(ctx context.Context, store *ledger.Store, database string, interval time.Duration,
	logger *slog.Logger, stop func(error),
) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		err := checkDevelopmentDatabase(ctx, store, database)
		var shared *sharedDatabaseError
		switch {
		case errors.As(err, &shared):
			logger.Error("development mode: the database now holds credentials; stopping", "error", err)
			stop(fmt.Errorf("stopping: %w", err))
			return nil
		case err != nil && ctx.Err() == nil:
			logger.Debug("development mode: checking the database for credentials", "error", err)
		}
	}
}
