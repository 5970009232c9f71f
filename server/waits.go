package server

import "sync"

// DefaultMaxWaitingReservesPerPrincipal is the default of
// Config.MaxWaitingReservesPerPrincipal. A worker waits for one key at a
// time, so a pipeline of hundreds of workers under one principal holds
// hundreds of waits at most; 1000 leaves room for that and bounds what one
// principal holds on a replica (a goroutine and a registration each, for
// up to --max-wait) to a few megabytes.
const DefaultMaxWaitingReservesPerPrincipal = 1000

// waitSlots counts the Reserves that wait (wait_timeout) on this replica,
// by principal, so that one principal cannot hold an unbounded number of
// waiters. Only principals with a wait in progress have an entry.
type waitSlots struct {
	max int // 0: no cap

	mu          sync.Mutex
	byPrincipal map[string]int
}

func newWaitSlots(maxPerPrincipal int) *waitSlots {
	return &waitSlots{max: maxPerPrincipal, byPrincipal: map[string]int{}}
}

// take takes one of principal's slots; it reports false, taking nothing,
// when the principal holds them all.
func (w *waitSlots) take(principal string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.max > 0 && w.byPrincipal[principal] >= w.max {
		return false
	}
	w.byPrincipal[principal]++
	return true
}

// give returns a slot that take gave principal.
func (w *waitSlots) give(principal string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byPrincipal[principal] <= 1 {
		delete(w.byPrincipal, principal)
		return
	}
	w.byPrincipal[principal]--
}
