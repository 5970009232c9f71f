package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// tokenUses remembers when each token last authenticated a call on this
// replica, until Auth.Run writes them to api_tokens.last_used_at, all in
// one statement, at every credential refresh. A call costs a lock-free map
// read and an atomic store; the map holds only tokens that authenticated,
// so it is bounded by the number of tokens.
type tokenUses struct {
	lastUse sync.Map // token id -> *atomic.Int64: unix nanoseconds, 0 once written
}

// useResolution is how much newer than the recorded use a use must be to
// be recorded: far finer than the flushes, and it spares the cores that
// authenticate the same token at once from writing the same word.
const useResolution = 100 * time.Millisecond

// used records a use of a token.
func (u *tokenUses) used(id string, now time.Time) {
	v, ok := u.lastUse.Load(id)
	if !ok {
		v, _ = u.lastUse.LoadOrStore(id, new(atomic.Int64))
	}
	last := v.(*atomic.Int64)
	if nanos := now.UnixNano(); nanos-last.Load() >= int64(useResolution) {
		last.Store(nanos)
	}
}

// take returns the uses recorded since the last take.
func (u *tokenUses) take() map[string]time.Time {
	taken := map[string]time.Time{}
	u.lastUse.Range(func(id, v any) bool {
		if nanos := v.(*atomic.Int64).Swap(0); nanos != 0 {
			taken[id.(string)] = time.Unix(0, nanos)
		}
		return true
	})
	return taken
}

// giveBack puts back uses that could not be written, unless the token was
// used again since.
func (u *tokenUses) giveBack(uses map[string]time.Time) {
	for id, at := range uses {
		v, _ := u.lastUse.LoadOrStore(id, new(atomic.Int64))
		v.(*atomic.Int64).CompareAndSwap(0, at.UnixNano())
	}
}

// flushUses writes the token uses recorded since the last flush.
func (a *Auth) flushUses(ctx context.Context) {
	uses := a.uses.take()
	if len(uses) == 0 {
		return
	}
	if err := a.store.RecordTokenUses(ctx, uses); err != nil {
		a.uses.giveBack(uses)
		if ctx.Err() == nil {
			a.logger.WarnContext(ctx, "recording when tokens were last used; retrying at the next refresh", "error", err)
		}
	}
}
