package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// failoverTimeout bounds the waits of the failover tests: for a cluster to
// start, fail over or answer again. Generous, for a loaded machine.
const failoverTimeout = 5 * time.Minute

// privateCluster starts a PostgreSQL cluster of the test's own, for tests
// that change server-wide settings, and returns a Store over it.
func privateCluster(t *testing.T) (*devcluster.Postgres, ledgertest.Bundle) {
	t.Helper()
	// Crash-safe: with synchronous_commit on, as a commit waits for a
	// synchronous standby.
	pg := pgtest.Private(t, devcluster.CrashSafe)
	return pg, ledgertest.StoreAt(t, pg.URL(), testConfig)
}

// alterSystem sets (or, with value "", resets) a server setting and
// reloads the configuration, over a connection of its own.
func alterSystem(t *testing.T, url, name, value string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	stmt := fmt.Sprintf("ALTER SYSTEM RESET %s", name)
	if value != "" {
		stmt = fmt.Sprintf("ALTER SYSTEM SET %s = '%s'", name, value)
	}
	_, err = conn.Exec(ctx, stmt)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	// pg_reload_conf only signals the postmaster: a session started before
	// it has read the file again still gets the old value. Wait until a new
	// session sees the new one (the default when reset).
	require.Eventually(t, func() bool {
		fresh, err := pgx.Connect(ctx, url)
		if err != nil {
			return false
		}
		defer func() { _ = fresh.Close(ctx) }()
		var applied bool
		err = fresh.QueryRow(ctx, `SELECT current_setting($1) = COALESCE(NULLIF($2, ''),
			(SELECT boot_val FROM pg_settings WHERE name = $1))`, name, value).Scan(&applied)
		return err == nil && applied
	}, time.Minute, 20*time.Millisecond, "%s = %q was not applied", name, value)
}

// A primary that turns read-only (a demoted primary, one being switched
// over) refuses writes with SQLSTATE 25006 (or, once it has said so, new
// connections to it are refused as read-only): the Store answers
// ErrUnavailable, the retry-safe error, drops the connection, and serves
// again as soon as the server accepts writes.
func TestWriteRefusedAsReadOnlyIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := pgtest.Private(t, devcluster.CrashSafe)
	// One connection, so that the one refused is the one the pool had.
	b := ledgertest.StoreAt(t, pg.URL()+"&pool_max_conns=1", testConfig)
	_, err := b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "before", Owner: "w", LeaseTTL: time.Minute})
	require.NoError(t, err)
	idle := backendPIDs(t, b.Pool)
	require.Len(t, idle, 1)

	alterSystem(t, pg.URL(), "default_transaction_read_only", "on")
	var pgErr *pgconn.PgError
	refused := ""
	for i := 0; refused == ""; i++ { // until the server has reloaded
		key := fmt.Sprintf("during-%d", i)
		_, err = b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: "w", LeaseTTL: time.Minute})
		if err != nil {
			refused = key
		}
	}
	require.ErrorIs(t, err, ledger.ErrUnavailable)
	// Refused by the server (25006), or, if the connection had already
	// reported the setting and was dropped, by the new connection's
	// target_session_attrs=read-write check.
	if !errors.As(err, &pgErr) {
		require.ErrorContains(t, err, "read only connection")
	} else {
		require.Equal(t, pgerrcode.ReadOnlySQLTransaction, pgErr.Code)
	}
	require.NotContains(t, backendPIDs(t, b.Pool), idle[0], "the connection to the read-only server was handed out again")

	alterSystem(t, pg.URL(), "default_transaction_read_only", "")
	require.Eventually(t, func() bool {
		_, err = b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "after", Owner: "w", LeaseTTL: time.Minute})
		return err == nil
	}, failoverTimeout, 10*time.Millisecond, "the Store did not serve again: %v", err)
	rows, err := b.Pool.Query(ctx, "SELECT key FROM entries WHERE namespace = 'ns'")
	require.NoError(t, err)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Contains(t, keys, "before")
	require.Contains(t, keys, "after")
	require.NotContains(t, keys, refused, "the refused Reserve changed something")
}

// backendPIDs returns the backend PIDs of the connections the pool hands
// out of its idle ones.
func backendPIDs(t *testing.T, pool *pgxpool.Pool) []uint32 {
	t.Helper()
	var pids []uint32
	for _, c := range pool.AcquireAllIdle(context.Background()) {
		pids = append(pids, c.Conn().PgConn().PID())
		c.Release()
	}
	return pids
}

// A Complete whose context ends while its COMMIT waits for a synchronous
// standby returns the context's error, and its backend goes on waiting:
// the Store closes the socket and never sends a cancel request, which
// would end the wait with a success that the standby never saw.
func TestCommitWaitingForStandbyIsNotCanceled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, b := privateCluster(t)
	r, err := b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", LeaseTTL: time.Hour})
	require.NoError(t, err)

	alterSystem(t, pg.URL(), "synchronous_standby_names", "absent_standby")
	t.Cleanup(func() { alterSystem(t, pg.URL(), "synchronous_standby_names", "") })
	b.Pool.Reset() // new sessions, which read the new setting as they start
	callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = b.Store.Complete(callCtx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Result: []byte("r")})
	require.Error(t, err)
	require.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ledger.ErrUnavailable), "got %v", err)

	// The backend that ran the COMMIT still waits for the standby: a cancel
	// request would have ended the wait at once.
	admin, err := pgx.Connect(ctx, pg.URL())
	require.NoError(t, err)
	defer func() { _ = admin.Close(ctx) }()
	var waiting int
	require.NoError(t, admin.QueryRow(ctx,
		"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&waiting))
	require.Equal(t, 1, waiting, "the COMMIT's wait for the standby was canceled")
}

// Over a Patroni cluster, a Store follows its primary through a failover
// without a restart: every Complete acknowledged before, during or after
// the crash of the primary is on the new primary; Reserves retried through
// the failover succeed; and a Reserve waiting for a key's holder across the
// failover is woken by the holder's Complete on the new primary (its
// listener reconnects and every waiter reads its key again).
func TestStoreFollowsFailover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ha, err := devcluster.StartHA(ctx, devcluster.HAConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ha.Destroy()) })
	b := ledgertest.StoreAt(t, ha.URL(), testConfig)
	require.Eventually(t, b.Store.Listening, failoverTimeout, 10*time.Millisecond)

	holder, err := b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "held", Owner: "holder", LeaseTTL: time.Hour})
	require.NoError(t, err)
	answer := make(chan waited, 1)
	go func() {
		r, err := b.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "held", Owner: "waiter", WaitTimeout: longWait})
		answer <- waited{r, err}
	}()
	require.Eventually(t, func() bool { return b.Store.Waiters() == 1 }, failoverTimeout, 10*time.Millisecond)

	// Workers take keys through the failover, each retrying a call until
	// it is answered; they remember the Completes acknowledged.
	stop, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; stop.Err() == nil; i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				if retry(stop, func(ctx context.Context) error { return completeKey(ctx, b.Store, key) }) == nil {
					mu.Lock()
					acked = append(acked, key)
					mu.Unlock()
				}
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	require.Eventually(t, func() bool { return count() > 20 }, failoverTimeout, 10*time.Millisecond)

	killed, err := ha.KillPrimary(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		primary, _ := ha.Primary(ctx)
		return primary != nil && primary != killed
	}, failoverTimeout, 100*time.Millisecond, "no failover")
	before := count()
	require.Eventually(t, func() bool { return count() > before+20 }, failoverTimeout, 10*time.Millisecond,
		"the Store did not serve again after the failover")
	require.Eventually(t, b.Store.Listening, failoverTimeout, 10*time.Millisecond, "the listener did not reconnect")

	// The holder finishes on the new primary: the waiter replays it.
	require.NoError(t, retry(ctx, func(ctx context.Context) error {
		_, err := b.Store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "held", FencingToken: holder.FencingToken, Result: []byte("done")})
		return err
	}))
	woken := receive(t, answer)
	require.Equal(t, ledger.Completed, woken.Outcome)
	require.Equal(t, []byte("done"), woken.Result)

	stopWorkers()
	wg.Wait()
	var completed int
	require.NoError(t, b.Pool.QueryRow(ctx,
		"SELECT count(*) FROM entries WHERE namespace = 'ns' AND state = 'completed' AND key = ANY($1)", acked).Scan(&completed))
	require.Equal(t, len(acked), completed, "acknowledged Completes lost in the failover")
}

// completeKey reserves key and completes it; a retry after an answer lost
// in the failover replays it or takes it over.
func completeKey(ctx context.Context, store *ledger.Store, key string) error {
	r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: "worker", LeaseTTL: time.Minute})
	if err != nil || r.Outcome == ledger.Completed {
		return err
	}
	if r.Outcome != ledger.Acquired {
		return fmt.Errorf("reserve %s: %s", key, r.Outcome)
	}
	_, err = store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: key, FencingToken: r.FencingToken, Result: []byte(key)})
	return err
}

// retry calls f until it returns an error that is not ErrUnavailable (or
// nil), or ctx ends.
func retry(ctx context.Context, f func(context.Context) error) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(attempt)
		cancel()
		if err == nil || !errors.Is(err, ledger.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
