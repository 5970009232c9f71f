package ledger

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultReadConnectTimeout is the connect timeout ConfigureReadPool gives a
// read pool whose URL sets none (connect_timeout): how long a read waits
// for a standby that does not answer before it is served by the primary.
const DefaultReadConnectTimeout = 2 * time.Second

// ConfigureReadPool prepares the configuration of a Store's read pool
// (Config.ReadPool): a pool over a hot standby of the Store's database,
// for the reads that may be stale (ListEntries, GetHistory, ListEvents).
// Unlike ConfigurePool:
//
//   - Any server will do. target_session_attrs stays as the URL says: with
//     a multi-host URL listing every member, "prefer-standby" reads from a
//     standby and from the primary when none is up, "standby" from a
//     standby only (the Store then reads from its primary pool while none
//     is up). A server that is, or turns into, the primary is used as it
//     is: its answers are only fresher.
//   - Cancel requests are sent as pgx sends them. The read pool runs
//     SELECTs only, which commit nothing that a cancel could turn into a
//     local commit; cancelling a listing whose caller has gone stops it on
//     the standby at once, and with it the snapshot that holds replay back
//     (or that replay would cancel).
//
// It sets a connect timeout of DefaultReadConnectTimeout per host unless
// the URL sets one, so that a standby that does not answer (its address
// dropped by a firewall) costs a read that long before the Store falls back
// to the primary, not the caller's whole deadline.
//
// Options add to that (see WithTracerProvider).
func ConfigureReadPool(config *pgxpool.Config, options ...PoolOption) {
	for _, option := range options {
		option(config)
	}
	if config.ConnConfig.ConnectTimeout == 0 {
		config.ConnConfig.ConnectTimeout = DefaultReadConnectTimeout
	}
}

// readRouter gives the reads that may be stale a connection: of the read
// pool (a standby) when there is one and it can be reached, otherwise of
// the primary's pool. A standby that cannot be reached is left alone for
// a while (retryInterval), so that the reads meanwhile do not each wait
// for it; the first read after that tries it again.
type readRouter struct {
	primary       *pgxpool.Pool
	standby       *pgxpool.Pool // nil: every read is the primary's
	retryInterval time.Duration
	logger        *slog.Logger

	mu        sync.Mutex
	down      bool      // the last attempt could not reach the standby
	nextTryAt time.Time // while down: when to try the standby again
}

type primaryReadsKey struct{}

// WithPrimaryReads returns a context whose reads are served by the Store's
// pool even when it has a read pool (Config.ReadPool): for a read that
// must see the writes just made, such as the history that a Lookup
// returns with its entry.
func WithPrimaryReads(ctx context.Context) context.Context {
	return context.WithValue(ctx, primaryReadsKey{}, true)
}

func readsFromPrimary(ctx context.Context) bool {
	primary, _ := ctx.Value(primaryReadsKey{}).(bool)
	return primary
}

// errReadFromPrimary is returned by a read that ran on the standby and
// needs the primary's answer instead; the router runs it again there.
var errReadFromPrimary = errors.New("this read needs the primary")

// read runs fn on one connection, from the standby's pool if there is one
// and it can be reached, else from the primary's. A read is run again on
// the primary when the standby cannot be reached (no connection can be
// made, or it breaks, or the server is starting up or shutting down), when
// the standby cancelled it for a conflict with replay (which a retry there
// would likely meet again), or when fn returns errReadFromPrimary; every
// other error, such as a statement timeout, is the read's. Reads change
// nothing, so running one twice is harmless.
func (r *readRouter) read(ctx context.Context, fn func(conn *pgxpool.Conn) error) error {
	if r.standby != nil && !readsFromPrimary(ctx) && r.standbyWorthTrying() {
		var lost error // why the standby went away under fn, if it did
		ran, err := withConn(ctx, r.standby, func(conn *pgxpool.Conn) error {
			err := fn(conn)
			if err != nil && ctx.Err() == nil && standbyLost(conn, err) {
				lost = err
			}
			return err
		})
		switch {
		case err == nil:
			r.reached()
			return nil
		case ctx.Err() != nil:
			return err // the caller's deadline, wherever it struck
		case errors.Is(err, errReadFromPrimary), ran && replayConflict(err):
			r.reached()
		case !ran: // no connection: the standby refused, or did not answer in time
			r.unreachable(err)
		case lost != nil:
			r.unreachable(lost)
		default:
			return err
		}
	}
	_, err := withConn(ctx, r.primary, fn)
	return err
}

// withConn runs fn on a connection of pool, and reports whether it ran:
// when it did not, the error is the pool's (no connection could be made),
// as a ledger error (see dbError); when it did, fn's.
func withConn(ctx context.Context, pool *pgxpool.Pool, fn func(conn *pgxpool.Conn) error) (ran bool, err error) {
	err = pool.AcquireFunc(ctx, func(conn *pgxpool.Conn) error {
		ran = true
		return fn(conn)
	})
	if !ran {
		err = dbError(err)
	}
	return ran, err
}

// standbyLost reports whether a read's error means that the standby went
// away under it, rather than that it answered with an error: the
// connection broke (it is closed now, or nothing was sent), or the server
// is shutting down or starting up.
func standbyLost(conn *pgxpool.Conn, err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow:
			return true
		}
	}
	return conn.Conn().IsClosed() || pgconn.SafeToRetry(err)
}

// replayConflict reports whether a standby cancelled a statement, or ended
// its session, for a conflict with the replay of the primary's changes
// (the rows it reads were vacuumed away, a lock it holds is needed): a
// serialization failure or a deadlock, which a hot standby's read-only
// sessions meet no other way.
func replayConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		(pgErr.Code == pgerrcode.SerializationFailure || pgErr.Code == pgerrcode.DeadlockDetected)
}

// standbyWorthTrying reports whether a read should try the standby: it
// is up, or it has been left alone for retryInterval.
func (r *readRouter) standbyWorthTrying() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.down || !time.Now().Before(r.nextTryAt)
}

// reached records that the standby served a read, and logs it when it
// had been out of reach.
func (r *readRouter) reached() {
	r.mu.Lock()
	wasDown := r.down
	r.down = false
	r.mu.Unlock()
	if wasDown {
		r.logger.Info("read database reachable again: the audit reads are served by it again")
	}
}

// unreachable records that the standby could not serve a read, and logs
// it when it had been up.
func (r *readRouter) unreachable(err error) {
	r.mu.Lock()
	wasDown := r.down
	r.down, r.nextTryAt = true, time.Now().Add(r.retryInterval)
	r.mu.Unlock()
	if !wasDown {
		r.logger.Warn("read database unreachable: the audit reads are served by the primary until it answers",
			"retry_interval", r.retryInterval, "error", err)
	}
}

// ReadPoolStat returns a snapshot of the read pool's statistics, or nil
// when the Store has no read pool (Config.ReadPool).
func (s *Store) ReadPoolStat() *pgxpool.Stat {
	if s.reads.standby == nil {
		return nil
	}
	return s.reads.standby.Stat()
}
