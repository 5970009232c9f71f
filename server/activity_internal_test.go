package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock that tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestActivityWindow: a namespace's activity covers the last hour in minute
// buckets, or the time since the replica started if that is less; older
// calls drop out, and namespaces are counted apart.
func TestActivityWindow(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2026, 1, 2, 10, 0, 30, 0, time.UTC)}
	a := newActivity(clock.Now)

	a.record(callOutcome{namespace: "web", reserve: outcomeAcquired})
	a.record(callOutcome{namespace: "web", reserve: outcomeReplayed})
	a.record(callOutcome{namespace: "web", failed: true, reason: ReasonLeaseLost})
	a.record(callOutcome{namespace: "other", reserve: outcomeReplayed})
	a.record(callOutcome{}) // no namespace: not counted
	clock.advance(10 * time.Minute)
	got := a.of("web")
	require.Equal(t, namespaceActivity{window: 10 * time.Minute, reserves: 2, replays: 1, calls: 3, errored: 1}, got)
	require.Equal(t, int64(1), a.of("other").replays)
	require.Equal(t, namespaceActivity{window: 10 * time.Minute}, a.of("unknown"))

	clock.advance(40 * time.Minute)
	a.record(callOutcome{namespace: "web", reserve: outcomeInProgress})
	clock.advance(15 * time.Minute) // 65 minutes after the first calls
	got = a.of("web")
	require.Equal(t, namespaceActivity{window: time.Hour, reserves: 1, calls: 1}, got, "the first calls are out of the window")

	clock.advance(2 * time.Hour)
	require.Equal(t, namespaceActivity{window: time.Hour}, a.of("web"), "a bucket reused after an hour starts from zero")
}

// TestActivityBound: beyond its bound, the counter makes room by forgetting
// the namespaces idle for the whole window, and otherwise does not count a
// new namespace.
func TestActivityBound(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)}
	a := newActivity(clock.Now)
	a.max = 3
	for i := range 3 {
		a.record(callOutcome{namespace: fmt.Sprintf("ns%d", i)})
	}
	a.record(callOutcome{namespace: "late"})
	require.Zero(t, a.of("late").calls, "no room: not counted")
	require.Equal(t, int64(1), a.of("ns0").calls)

	clock.advance(61 * time.Minute)
	a.record(callOutcome{namespace: "ns0"})
	a.record(callOutcome{namespace: "late"})
	require.Equal(t, int64(1), a.of("late").calls, "the idle namespaces made room")
	require.Len(t, a.namespaces, 2)
}
