package server

import (
	"sync"
	"time"
)

// activityWindow is the span of a namespace's activity that GetNamespace
// reports (NamespaceActivity), in minute buckets.
const (
	activityWindow  = time.Hour
	activityBuckets = int(activityWindow / time.Minute)
)

// maxActivityNamespaces bounds the namespaces whose activity a replica
// keeps at once (each costs a few KiB): beyond it, a namespace idle for the
// whole window makes room, and if none is, a new namespace is not counted
// until one is.
const maxActivityNamespaces = 10000

// activity counts each namespace's calls, Reserve answers, replays and
// errors over the last hour, in one-minute buckets, in this replica's
// memory: what GetNamespace reports as NamespaceActivity (for the
// console's replay ratio and error rate). It counts what the outcome
// interceptor sees, the calls that were authenticated, authorized and not
// rate limited, which are the calls /metrics counts by namespace.
type activity struct {
	mu         sync.Mutex
	max        int // namespaces kept at once: maxActivityNamespaces
	started    time.Time
	now        func() time.Time
	namespaces map[string]*activityRing
}

// activityRing is one namespace's buckets, indexed by minute modulo their
// number; a bucket whose minute is not the one being counted is stale and
// starts again from zero.
type activityRing [activityBuckets]activityCounts

// activityCounts are one minute's counts.
type activityCounts struct {
	minute                            int64 // Unix minutes
	reserves, replays, calls, errored int64
}

// namespaceActivity is the sum over a window.
type namespaceActivity struct {
	window                            time.Duration
	reserves, replays, calls, errored int64
}

func newActivity(now func() time.Time) *activity {
	return &activity{started: now(), now: now, max: maxActivityNamespaces, namespaces: make(map[string]*activityRing)}
}

// record counts one call that named namespace (see callOutcome). A nil
// *activity records nothing.
func (a *activity) record(call callOutcome) {
	if a == nil || call.namespace == "" {
		return
	}
	minute := a.now().Unix() / 60
	a.mu.Lock()
	defer a.mu.Unlock()
	ring, ok := a.namespaces[call.namespace]
	if !ok {
		if len(a.namespaces) >= a.max && !a.evictIdle(minute) {
			return
		}
		ring = new(activityRing)
		a.namespaces[call.namespace] = ring
	}
	bucket := &ring[minute%int64(activityBuckets)]
	if bucket.minute != minute {
		*bucket = activityCounts{minute: minute}
	}
	bucket.calls++
	if call.failed {
		bucket.errored++
	}
	if call.reserve != "" {
		bucket.reserves++
		if call.reserve == outcomeReplayed {
			bucket.replays++
		}
	}
}

// evictIdle removes the namespaces without a call in the window; it
// reports whether it removed any. Called with a.mu held, when the map is
// full: at most once per new namespace beyond the bound.
func (a *activity) evictIdle(minute int64) bool {
	evicted := false
	for name, ring := range a.namespaces {
		if ring.sum(minute).calls == 0 {
			delete(a.namespaces, name)
			evicted = true
		}
	}
	return evicted
}

// sum adds up the buckets of the window that ends in minute.
func (r *activityRing) sum(minute int64) namespaceActivity {
	var total namespaceActivity
	for _, bucket := range r {
		if bucket.minute > minute-int64(activityBuckets) && bucket.minute <= minute {
			total.reserves += bucket.reserves
			total.replays += bucket.replays
			total.calls += bucket.calls
			total.errored += bucket.errored
		}
	}
	return total
}

// of returns a namespace's activity over the window: the last hour, or
// since the replica started if that is less. A nil *activity has none.
func (a *activity) of(namespace string) namespaceActivity {
	if a == nil {
		return namespaceActivity{}
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	var total namespaceActivity
	if ring, ok := a.namespaces[namespace]; ok {
		total = ring.sum(now.Unix() / 60)
	}
	total.window = min(activityWindow, now.Sub(a.started))
	return total
}
