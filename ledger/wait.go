package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
)

// How a Reserve waits for the holder of a key (ReserveRequest.WaitTimeout):
//
//  1. It registers with the Store's waitHub for the key, then reads the key
//     again (a change committed before that read is seen by the read; one
//     committed after it is notified).
//  2. It flags the entry (entries.waiters) so that the next change of the
//     lease sends a notification (migrations/00002), and learns whether
//     the lease it read still holds.
//  3. It sleeps until a notification for the key, the end of the holder's
//     lease by the database's clock, or the end of its wait. Woken by the
//     first two, it reads again, answering as a fresh Reserve would; at the
//     end of its wait it answers IN_PROGRESS from what it read last, with
//     no statement: thousands of waits that end together (a batch of
//     workers started at once) would otherwise all read at the same moment,
//     and some would miss their callers' deadlines.
//
// One LISTEN connection per Store (Listen) receives the notifications of
// every replica's changes and wakes the waiters of the key; waiters hold no
// database connection while they sleep.

// waitNotifyChannel is the channel the trigger notifies.
const waitNotifyChannel = "ledgerd_waiters"

// Bounds of the waits.
const (
	// leaseExpiryMargin is added to a holder's remaining lease before a
	// waiter reads again, so that the lease has run out by then.
	leaseExpiryMargin = 10 * time.Millisecond
	// unlistenedPoll is how often waiters read again while the Store is not
	// listening (Listen not running, or its connection down): slower waking,
	// never a missed change.
	unlistenedPoll = time.Second
	// maxDeadlineMargin bounds the time a wait leaves before the request's
	// deadline to answer IN_PROGRESS in.
	maxDeadlineMargin = 500 * time.Millisecond
)

type waitKey struct{ namespace, key string }

// waitHub wakes the waiters of a key when its notification arrives.
type waitHub struct {
	mu        sync.Mutex
	listening bool
	waiters   map[waitKey]map[chan struct{}]struct{}
}

func newWaitHub() *waitHub {
	return &waitHub{waiters: make(map[waitKey]map[chan struct{}]struct{})}
}

// register returns a channel that receives a value when the key changes,
// and the function that unregisters it.
func (h *waitHub) register(namespace, key string) (<-chan struct{}, func()) {
	wk := waitKey{namespace, key}
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters[wk] == nil {
		h.waiters[wk] = make(map[chan struct{}]struct{})
	}
	h.waiters[wk][ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.waiters[wk], ch)
		if len(h.waiters[wk]) == 0 {
			delete(h.waiters, wk)
		}
	}
}

// wake wakes the waiters of a key, or of every key when match says so.
func (h *waitHub) wake(match func(waitKey) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for wk, set := range h.waiters {
		if !match(wk) {
			continue
		}
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default: // already woken
			}
		}
	}
}

func (h *waitHub) setListening(listening bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.listening = listening
}

func (h *waitHub) isListening() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.listening
}

// Listen receives the notifications that wake waiting Reserves, on a
// connection of its own (not one of the pool's), until ctx ends; it then
// returns nil. It reconnects by itself after a connection loss, and wakes
// every waiter when it does, since changes may have been missed meanwhile.
// Run it in a goroutine beside the server: without it, waiting Reserves
// notice a change only by reading again every second.
func (s *Store) Listen(ctx context.Context) error {
	connConfig := s.pool.Config().ConnConfig.Copy()
	handler := &waitHandler{store: s}
	listener := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			s.waits.setListening(false)
			conn, err := pgx.ConnectConfig(ctx, connConfig)
			if err != nil {
				return nil, err
			}
			if handler.schema, err = currentSchema(ctx, conn); err != nil {
				_ = conn.Close(ctx)
				return nil, err
			}
			return conn, nil
		},
		LogError: func(ctx context.Context, err error) {
			s.waits.setListening(false)
			if ctx.Err() == nil {
				s.logger.WarnContext(ctx, "listening for key changes", "error", err)
			}
		},
		ReconnectDelay: time.Second,
	}
	listener.Handle(waitNotifyChannel, handler)
	err := listener.Listen(ctx)
	s.waits.setListening(false)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("listen: %w", err)
}

// Waiters returns the number of Reserves waiting for a key's holder now.
func (s *Store) Waiters() int {
	s.waits.mu.Lock()
	defer s.waits.mu.Unlock()
	n := 0
	for _, set := range s.waits.waiters {
		n += len(set)
	}
	return n
}

// Listening reports whether Listen is connected and receiving the
// notifications that wake waiting Reserves.
func (s *Store) Listening() bool { return s.waits.isListening() }

// currentSchema is the schema the ledger's tables are in: the first of the
// connection's search_path that exists.
func currentSchema(ctx context.Context, conn interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (string, error) {
	var schema *string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return "", fmt.Errorf("read current schema: %w", dbError(err))
	}
	if schema == nil {
		return "", errors.New("the search_path names no existing schema")
	}
	return *schema, nil
}

// waitHandler dispatches notifications to the waiters of this Store's
// schema (several ledgers may share one database, in different schemas).
// Listener calls it from one goroutine, after Connect has set the schema.
type waitHandler struct {
	store  *Store
	schema string
}

// HandleBacklog runs after each (re)connection, once LISTEN is in place:
// changes made while the connection was down were not notified, so every
// waiter reads again.
func (h *waitHandler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	h.store.waits.setListening(true)
	h.store.waits.wake(func(waitKey) bool { return true })
	return nil
}

// HandleNotification wakes the waiters of the key named by the payload,
// [schema, namespace, key], where a null key stands for the whole namespace.
func (h *waitHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	var payload [3]*string
	if err := json.Unmarshal([]byte(n.Payload), &payload); err != nil || payload[0] == nil || payload[1] == nil {
		return fmt.Errorf("malformed notification payload %q", n.Payload)
	}
	if *payload[0] != h.schema {
		return nil
	}
	namespace, key := *payload[1], payload[2]
	h.store.waits.wake(func(wk waitKey) bool {
		return wk.namespace == namespace && (key == nil || wk.key == *key)
	})
	return nil
}

// EndWaits makes every waiting Reserve answer now (IN_PROGRESS, unless the
// key changed), and later Reserves not wait: called when the server shuts
// down, so that waits do not hold its drain up to their full length.
func (s *Store) EndWaits() {
	s.endWaitsOnce.Do(func() { close(s.waitsEnded) })
}

// waitDeadline is when a Reserve that may wait up to requested must answer:
// within the Store's maximum wait, and early enough before the request's
// deadline to deliver an IN_PROGRESS answer.
func (s *Store) waitDeadline(ctx context.Context, requested time.Duration) time.Time {
	now := time.Now()
	deadline := now.Add(min(requested, s.limits.MaxWait))
	if ctxDeadline, ok := ctx.Deadline(); ok {
		margin := min(maxDeadlineMargin, ctxDeadline.Sub(now)/10)
		if d := ctxDeadline.Add(-margin); d.Before(deadline) {
			deadline = d
		}
	}
	return deadline
}

// awaitChange sleeps until the key's lease, read as r, may have changed:
// a notification, the end of the holder's lease, or the deadline. It first
// flags the entry so that the change will be notified; if the lease no
// longer holds, it returns at once.
func (s *Store) awaitChange(ctx context.Context, req ReserveRequest, r Reservation, changed <-chan struct{}, deadline time.Time) error {
	type heldRow struct {
		StillHeld bool `db:"still_held"`
	}
	found, err := queryRows[heldRow](ctx, s.pool, query("reserve_await"), req.Namespace, req.Key, r.FencingToken)
	if err != nil {
		return err
	}
	if len(found) == 0 || !found[0].StillHeld {
		return nil
	}
	sleep := min(time.Until(deadline), r.leaseRemaining+leaseExpiryMargin)
	if !s.waits.isListening() {
		sleep = min(sleep, unlistenedPoll)
	}
	timer := time.NewTimer(sleep)
	defer timer.Stop()
	select {
	case <-changed:
	case <-timer.C:
		if !time.Now().Before(deadline) {
			return errWaitOver
		}
	case <-s.waitsEnded:
		return errWaitsEnded
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// errWaitsEnded ends a wait after EndWaits, and errWaitOver a wait that ran
// to its deadline: the waiter answers what it read.
var (
	errWaitsEnded = errors.New("waits ended")
	errWaitOver   = errors.New("the wait is over")
)
