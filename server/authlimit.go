package server

import (
	"container/list"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultFailedAuthLimit is AuthConfig.FailedAuthLimit's default: a source
// address may fail authentication 50 times in a row, and 5 times a second
// after that. A token's secret is 256 random bits, so no rate makes
// guessing one worthwhile: the limit bounds the work and the log lines a
// failing source causes, and it is generous so that it rarely refuses a
// legitimate client that shares an address (a NAT, a proxy) with a broken
// or hostile one.
var DefaultFailedAuthLimit = Rate{PerSecond: 5, Burst: 50}

// DefaultMaxFailedAuthSources is AuthConfig.MaxFailedAuthSources's
// default.
const DefaultMaxFailedAuthSources = 10000

// failureLimiter keeps a token bucket of failed authentications per source
// address (its host: a client's ports change with every connection): each
// failure takes a token, and a source whose bucket is empty is refused
// before its credentials are checked, until it refills. Only failures
// count, so a client that authenticates is never slowed; only sources that
// failed are kept, the most recent maxSources of them (a source evicted
// has its failures forgotten, as it would after a pause).
type failureLimiter struct {
	rate       Rate
	maxSources int
	tracked    atomic.Int64 // len(sources), read without the lock

	mu      sync.Mutex
	sources map[string]*list.Element // of *failedSource
	recent  *list.List               // most recently failed first
}

// failedSource is one source's bucket, and whether it is being refused
// (so that only the first refusal of a stretch is logged).
type failedSource struct {
	host    string
	bucket  *rate.Limiter
	limited bool
}

// newFailureLimiter returns a limiter, or nil (no limit) for a rate that
// is not positive.
func newFailureLimiter(r Rate, maxSources int) *failureLimiter {
	if r.PerSecond <= 0 {
		return nil
	}
	return &failureLimiter{rate: r, maxSources: maxSources, sources: map[string]*list.Element{}, recent: list.New()}
}

// sourceHost is the part of a source address that the limits count by: the
// host of host:port, or the whole address if it has no port.
func sourceHost(source string) string {
	if host, _, err := net.SplitHostPort(source); err == nil {
		return host
	}
	return source
}

// active reports whether any source is being counted: until one fails,
// admit needs no source.
func (l *failureLimiter) active() bool { return l != nil && l.tracked.Load() > 0 }

// admit reports whether a call from source may have its credentials
// checked; if not, how long until it may, and whether this is the first
// refusal since the source was last admitted.
func (l *failureLimiter) admit(source string, now time.Time) (ok bool, retryAfter time.Duration, first bool) {
	if !l.active() { // nobody failed: the common case takes no lock
		return true, 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.sources[sourceHost(source)]
	if !found {
		return true, 0, false
	}
	s := e.Value.(*failedSource)
	tokens := s.bucket.TokensAt(now)
	if tokens >= 1 {
		s.limited = false
		return true, 0, false
	}
	first, s.limited = !s.limited, true
	retryAfter = time.Duration((1 - tokens) / l.rate.PerSecond * float64(time.Second))
	return false, max(retryAfter, time.Millisecond), first
}

// fail takes a token from the source's bucket.
func (l *failureLimiter) fail(source string, now time.Time) {
	if l == nil {
		return
	}
	host := sourceHost(source)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.sources[host]
	if found {
		l.recent.MoveToFront(e)
	} else {
		if l.recent.Len() >= l.maxSources {
			oldest := l.recent.Back()
			l.recent.Remove(oldest)
			delete(l.sources, oldest.Value.(*failedSource).host)
		}
		e = l.recent.PushFront(&failedSource{host: host, bucket: rate.NewLimiter(rate.Limit(l.rate.PerSecond), max(l.rate.Burst, 1))})
		l.sources[host] = e
		l.tracked.Store(int64(len(l.sources)))
	}
	e.Value.(*failedSource).bucket.AllowN(now, 1)
}
