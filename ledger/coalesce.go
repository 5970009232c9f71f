package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// CoalesceConfig configures the coalescing of concurrent singleton Reserves,
// Completes and Lookups: under load, the first statement of many Reserves
// (insert or read) runs as one statement, and many Completes as one
// statement, each batch in one commit (group commit); many Lookups share
// one read. Every caller still gets its own outcome; an item that fails
// fails alone.
//
// It adapts to the load: a call that finds fewer than MaxInFlight batches
// running goes to the database at once, alone; calls that arrive while
// MaxInFlight batches run queue up and leave together in the next batch.
type CoalesceConfig struct {
	// Disabled turns coalescing off: every call is its own statement.
	Disabled bool
	// MaxBatch bounds the calls in one statement. Defaults to 500.
	MaxBatch int
	// MaxInFlight bounds the batches (of each kind) running at once; a call
	// waits only while that many run. Defaults to 1, classic group commit:
	// while one statement of a kind runs, the next calls of that kind gather
	// for the next. On the 2-core benchmark machine 1 gave the most pairs a
	// second and the lowest latency, loaded or paced (docs/performance.md);
	// more lets a slow statement (one waiting on a row lock) hold up fewer
	// calls.
	MaxInFlight int
	// MaxWait is the longest a batch is held back to gather more calls, and
	// only while other batches of its kind are running (never under light
	// load, and never with MaxInFlight 1).
	// Defaults to 0: a batch leaves as soon as a slot frees.
	MaxWait time.Duration
}

func (c CoalesceConfig) withDefaults() CoalesceConfig {
	setDefault(&c.MaxBatch, 500)
	setDefault(&c.MaxInFlight, 1)
	return c
}

func (c CoalesceConfig) validate(l Limits) error {
	switch {
	case c.MaxBatch < 1 || c.MaxBatch > l.MaxBatchItems:
		return fmt.Errorf("Coalesce.MaxBatch must be between 1 and MaxBatchItems %d, got %d", l.MaxBatchItems, c.MaxBatch)
	case c.MaxInFlight < 1:
		return fmt.Errorf("Coalesce.MaxInFlight must be positive, got %d", c.MaxInFlight)
	case c.MaxWait < 0:
		return fmt.Errorf("Coalesce.MaxWait must not be negative, got %s", c.MaxWait)
	}
	return nil
}

// CoalesceStats counts the work of one kind of coalesced call.
type CoalesceStats struct {
	// Batches is the number of statements run; Items the calls they
	// carried. Items/Batches is the mean batch size.
	Batches, Items int64
	// Fallbacks counts the batches whose statement failed and whose calls
	// were then run one by one, so that only the failing one failed.
	Fallbacks int64
}

// coalescer gathers concurrent calls of one kind into batches, and runs
// each batch with one statement. It holds no goroutine while idle: the call
// that finds no dispatcher starts one, which ends when the queue is empty.
type coalescer[I any, O any] struct {
	// run runs a batch; it returns one O per item, in order.
	run func(ctx context.Context, items []I) ([]O, error)
	// key identifies an item's key: a batch holds each key at most once.
	key func(I) string
	cfg CoalesceConfig

	slots chan struct{} // one per running batch
	grew  chan struct{} // a call was queued (for MaxWait)

	mu          sync.Mutex
	queue       []*pendingCall[I, O]
	dispatching bool

	batches, items, fallbacks atomic.Int64
}

type pendingCall[I any, O any] struct {
	ctx  context.Context
	item I
	out  O
	err  error
	done chan struct{}
}

func newCoalescer[I any, O any](cfg CoalesceConfig, key func(I) string, run func(context.Context, []I) ([]O, error)) *coalescer[I, O] {
	return &coalescer[I, O]{
		run:   run,
		key:   key,
		cfg:   cfg,
		slots: make(chan struct{}, cfg.MaxInFlight),
		grew:  make(chan struct{}, 1),
	}
}

// do runs item in the next batch and returns its own outcome. If ctx ends
// first, do returns ctx's error; the item may still be run (as with any
// call whose response is lost, the caller's retry is safe).
//
// A call that finds nothing queued and no statement of its kind running
// runs alone, in its own goroutine and with its own context, as a call
// without coalescing would: under light load, handing it to a dispatcher
// and back would only add two goroutines and three wake-ups. Calls that
// arrive meanwhile queue up, as they would behind any running statement
// (and, with MaxInFlight above 1, may wait MaxWait to gather).
func (c *coalescer[I, O]) do(ctx context.Context, item I) (O, error) {
	c.mu.Lock()
	if !c.dispatching && len(c.slots) == 0 && c.takeSlot() {
		c.mu.Unlock()
		return c.runAlone(ctx, item)
	}
	call := &pendingCall[I, O]{ctx: ctx, item: item, done: make(chan struct{})}
	c.queue = append(c.queue, call)
	start := !c.dispatching
	c.dispatching = true
	c.mu.Unlock()
	select {
	case c.grew <- struct{}{}:
	default:
	}
	if start {
		go c.dispatch()
	}
	select {
	case <-call.done:
		return call.out, call.err
	case <-ctx.Done():
		var zero O
		return zero, ctx.Err()
	}
}

// takeSlot takes a slot if one is free, without waiting.
func (c *coalescer[I, O]) takeSlot() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// runAlone runs one call as a batch of its own, holding the slot do took.
func (c *coalescer[I, O]) runAlone(ctx context.Context, item I) (O, error) {
	defer func() { <-c.slots }()
	c.batches.Add(1)
	c.items.Add(1)
	outs, err := c.run(ctx, []I{item})
	if err != nil {
		var zero O
		return zero, err
	}
	return outs[0], nil
}

// dispatch sends batches while calls are queued: each waits for a free
// slot, which is how calls gather while the database is busy.
func (c *coalescer[I, O]) dispatch() {
	for {
		c.slots <- struct{}{}
		c.mu.Lock()
		queued := len(c.queue)
		c.mu.Unlock()
		if queued > 0 && c.cfg.MaxWait > 0 && len(c.slots) > 1 {
			c.linger()
		}
		c.mu.Lock()
		batch := c.take()
		if len(batch) == 0 {
			c.dispatching = false
			c.mu.Unlock()
			<-c.slots
			return
		}
		c.mu.Unlock()
		go c.execute(batch)
	}
}

// linger waits up to MaxWait for a full batch.
func (c *coalescer[I, O]) linger() {
	timer := time.NewTimer(c.cfg.MaxWait)
	defer timer.Stop()
	for {
		c.mu.Lock()
		full := len(c.queue) >= c.cfg.MaxBatch
		c.mu.Unlock()
		if full {
			return
		}
		select {
		case <-c.grew:
		case <-timer.C:
			return
		}
	}
}

// take removes the next batch from the queue: up to MaxBatch calls, each
// key once (a repeated key waits for the next batch), skipping the calls
// whose callers are gone. c.mu is held.
func (c *coalescer[I, O]) take() []*pendingCall[I, O] {
	batch := make([]*pendingCall[I, O], 0, min(len(c.queue), c.cfg.MaxBatch))
	keys := make(map[string]struct{}, cap(batch))
	rest := c.queue[:0]
	for _, call := range c.queue {
		if call.ctx.Err() != nil {
			continue // its caller returned already
		}
		key := c.key(call.item)
		if _, dup := keys[key]; dup || len(batch) == c.cfg.MaxBatch {
			rest = append(rest, call)
			continue
		}
		keys[key] = struct{}{}
		batch = append(batch, call)
	}
	clear(c.queue[len(rest):])
	c.queue = rest
	return batch
}

// execute runs a batch, frees its slot and hands each call its outcome
// (in that order, so that a caller's next call finds the slot free). When
// the statement
// fails for another reason than the database being unreachable, one item
// may be to blame: each is then run alone, so that only it fails. When the
// calls are traced, the statement is linked to them (see traceBatch).
func (c *coalescer[I, O]) execute(batch []*pendingCall[I, O]) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	ctx, traced := traceBatch(ctx, batch)
	items := make([]I, len(batch))
	for i, call := range batch {
		items[i] = call.item
	}
	c.batches.Add(1)
	c.items.Add(int64(len(batch)))
	outs, err := c.run(ctx, items)
	noteCalls(traced, batch)
	if err != nil && len(batch) > 1 && !errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
		c.fallbacks.Add(1)
		for _, call := range batch {
			out, err := c.run(call.ctx, []I{call.item})
			if err == nil {
				call.out = out[0]
			}
			call.err = err
		}
	} else {
		for i, call := range batch {
			if err == nil {
				call.out = outs[i]
			}
			call.err = err
		}
	}
	<-c.slots
	for _, call := range batch {
		close(call.done)
	}
}

// batchContext is the context of a batch's statement: not canceled when
// one caller gives up (the others still wait), with the latest deadline of
// its callers, if they all have one.
func batchContext[I any, O any](batch []*pendingCall[I, O]) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, call := range batch {
		deadline, ok := call.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if deadline.After(latest) {
			latest = deadline
		}
	}
	return context.WithDeadline(context.Background(), latest)
}

func (c *coalescer[I, O]) stats() CoalesceStats {
	return CoalesceStats{Batches: c.batches.Load(), Items: c.items.Load(), Fallbacks: c.fallbacks.Load()}
}

// coalescers are the Store's coalescers of singleton calls; nil when
// coalescing is disabled. Each runs the twin statement of its call for
// many keys: reserve_insert_batch.sql for the first statement of Reserve,
// complete_batch.sql for Complete, lookup_batch.sql for Lookup.
type coalescers struct {
	reserves  *coalescer[reserveItem, *reserveRow]
	completes *coalescer[completeItem, *guardRow]
	lookups   *coalescer[lookupItem, *entryRow]
}

func newCoalescers(s *Store, cfg CoalesceConfig) *coalescers {
	if cfg.Disabled {
		return nil
	}
	return &coalescers{
		reserves:  newCoalescer(cfg, reserveItem.id, oneOrMany(s.pool, insertOrReadOne, insertOrReadMany)),
		completes: newCoalescer(cfg, completeItem.id, oneOrMany(s.pool, completeOne, completeMany)),
		lookups:   newCoalescer(cfg, lookupItem.id, oneOrMany(s.pool, lookupOne, lookupMany)),
	}
}

// oneOrMany runs a gathered batch over q: with the statement for many keys,
// or, for a call that gathered nothing, with the singleton statement, which
// is cheaper.
func oneOrMany[I any, O any](q querier, one func(context.Context, querier, I) (O, error), many func(context.Context, querier, []I) ([]O, error)) func(context.Context, []I) ([]O, error) {
	return func(ctx context.Context, items []I) ([]O, error) {
		if len(items) == 1 {
			out, err := one(ctx, q, items[0])
			return []O{out}, err
		}
		return many(ctx, q, items)
	}
}

// CoalesceStats returns what coalescing did so far, by kind of call
// ("reserve", "complete", "lookup"); nil when it is disabled.
func (s *Store) CoalesceStats() map[string]CoalesceStats {
	if s.coalesce == nil {
		return nil
	}
	return map[string]CoalesceStats{
		"reserve": s.coalesce.reserves.stats(), "complete": s.coalesce.completes.stats(), "lookup": s.coalesce.lookups.stats(),
	}
}
