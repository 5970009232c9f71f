package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// Rate is a token bucket: PerSecond requests a second on average, in bursts
// of up to Burst. The zero Rate is unlimited.
type Rate struct {
	PerSecond float64
	Burst     int
}

func (r Rate) unlimited() bool { return r.PerSecond <= 0 }

// RateLimits bound the requests of each principal and of each namespace,
// on each replica (N replicas admit up to N times as much). A request over
// either limit is RESOURCE_EXHAUSTED, with a google.rpc.RetryInfo saying
// when to retry, and changes nothing.
type RateLimits struct {
	// PerPrincipal bounds each authenticated principal (all its namespaces
	// together). Zero: unlimited.
	PerPrincipal Rate
	// PerNamespace bounds each namespace (all its principals together).
	// Zero: unlimited.
	PerNamespace Rate
}

// ReasonRateLimited is the ErrorInfo reason of a request over a rate limit.
var ReasonRateLimited = ledgerv1.ErrorReason_RATE_LIMITED.String()

// maxLimiters bounds the buckets kept per kind: beyond it, the least
// recently made bucket is dropped (it refills anyway), so that requests
// naming made-up namespaces cannot grow the map without bound.
const maxLimiters = 10000

// rateLimiter keeps one bucket per principal and one per namespace. Its
// limits can be replaced while it serves (see setLimits): the buckets stay,
// with the tokens they hold, and take the new rates from then on.
type rateLimiter struct {
	// limits is read without the lock by every call, so that unlimited
	// calls take no lock at all.
	limits     atomic.Pointer[RateLimits]
	mu         sync.Mutex
	principals *buckets
	namespaces *buckets
}

type buckets struct {
	rate  Rate
	byKey map[string]*rate.Limiter
	order []string // insertion order, for eviction
}

func newBuckets(r Rate) *buckets { return &buckets{rate: r, byKey: map[string]*rate.Limiter{}} }

func (b *buckets) get(key string) *rate.Limiter {
	if l, ok := b.byKey[key]; ok {
		return l
	}
	if len(b.order) >= maxLimiters {
		delete(b.byKey, b.order[0])
		b.order = b.order[1:]
	}
	l := rate.NewLimiter(rate.Limit(b.rate.PerSecond), max(b.rate.Burst, 1))
	b.byKey[key] = l
	b.order = append(b.order, key)
	return l
}

// setRate gives every bucket the rate r from now on. A bucket keeps the
// tokens it holds (at most the new burst): a principal that has spent its
// burst does not get a fresh one because the limits were reloaded.
func (b *buckets) setRate(r Rate, now time.Time) {
	b.rate = r
	for _, l := range b.byKey {
		l.SetLimitAt(now, rate.Limit(r.PerSecond))
		l.SetBurstAt(now, max(r.Burst, 1))
	}
}

func newRateLimiter(limits RateLimits) *rateLimiter {
	r := &rateLimiter{principals: newBuckets(limits.PerPrincipal), namespaces: newBuckets(limits.PerNamespace)}
	r.limits.Store(&limits)
	return r
}

// setLimits replaces the limits, keeping the buckets (see buckets.setRate).
func (r *rateLimiter) setLimits(limits RateLimits, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.principals.setRate(limits.PerPrincipal, now)
	r.namespaces.setRate(limits.PerNamespace, now)
	r.limits.Store(&limits)
}

// unlimited reports whether neither limit applies, without the lock.
func (r *rateLimiter) unlimited() bool {
	l := r.limits.Load()
	return l.PerPrincipal.unlimited() && l.PerNamespace.unlimited()
}

// admit takes a token from the principal's and the namespace's buckets, or
// neither, and says how long to wait when it cannot.
func (r *rateLimiter) admit(principal, namespace string, cost int, now time.Time) (ok bool, retryAfter time.Duration, which string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	limits := r.limits.Load()
	var reservations []*rate.Reservation
	cancel := func() {
		for _, res := range reservations {
			res.CancelAt(now)
		}
	}
	check := func(b *buckets, unlimited bool, key, name string) bool {
		if unlimited {
			return true
		}
		limiter := b.get(key)
		res := limiter.ReserveN(now, cost) // one token per item: refused (!OK) above the burst, see batchOverBurst
		if delay := res.DelayFrom(now); !res.OK() || delay > 0 {
			res.CancelAt(now)
			cancel()
			retryAfter, which = max(delay, time.Millisecond), name
			return false
		}
		reservations = append(reservations, res)
		return true
	}
	if !check(r.principals, limits.PerPrincipal.unlimited(), principal, "principal "+principal) {
		return false, retryAfter, which
	}
	if namespace != "" && !check(r.namespaces, limits.PerNamespace.unlimited(), namespace, "namespace "+namespace) {
		return false, retryAfter, which
	}
	return true, 0, ""
}

// rateLimitInterceptor refuses requests over limiter's limits. It runs
// after authentication, so that it knows the principal ("anonymous"
// without authentication); health and reflection are not limited.
func rateLimitInterceptor(limiter *rateLimiter) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if limiter.unlimited() || public(info.FullMethod) {
			return handler(ctx, req)
		}
		principal, ok := principalFrom(ctx)
		if !ok {
			principal = "anonymous"
		}
		cost, field := costOf(req)
		namespace := namespaceOf(req)
		if err := limiter.limits.Load().batchOverBurst(field, cost, namespace != ""); err != nil {
			return nil, err
		}
		admitted, retryAfter, which := limiter.admit(principal, namespace, cost, time.Now())
		if !admitted {
			return nil, withDetails(codes.ResourceExhausted, ReasonRateLimited,
				fmt.Sprintf("rate limit of %s exceeded; retry after %s", which, retryAfter.Round(time.Millisecond)), nil,
				&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
		}
		return handler(ctx, req)
	}
}

// batchOverBurst refuses a batch with more items than a bucket's burst:
// it costs one token per item, so it could never be admitted, however long
// its caller waited. The refusal is INVALID_ARGUMENT, not RESOURCE_EXHAUSTED
// with a RetryInfo, because retrying the same batch cannot succeed and
// clients retry RESOURCE_EXHAUSTED: the caller must split the batch. It
// names the field, the batch's size and the burst, and nothing is changed.
func (l RateLimits) batchOverBurst(field string, items int, hasNamespace bool) error {
	if items <= 1 {
		return nil
	}
	limit := func(r Rate, which string) error {
		if r.unlimited() || items <= max(r.Burst, 1) {
			return nil
		}
		return validationStatus(&ledger.ValidationError{Field: field, Reason: fmt.Sprintf(
			"a batch costs one rate-limit token per item: %d items exceed the %s burst of %d; split the batch",
			items, which, max(r.Burst, 1))})
	}
	if err := limit(l.PerPrincipal, "per-principal"); err != nil {
		return err
	}
	if hasNamespace {
		return limit(l.PerNamespace, "per-namespace")
	}
	return nil
}

// costOf is what a request takes from the rate limits, and the field that
// holds its items: one per item of a batch, one for any other request.
func costOf(req any) (cost int, field string) {
	switch r := req.(type) {
	case *ledgerv1.ReserveBatchRequest:
		return max(1, len(r.GetItems())), "items"
	case *ledgerv1.CompleteBatchRequest:
		return max(1, len(r.GetItems())), "items"
	case *ledgerv1.LookupBatchRequest:
		return max(1, len(r.GetKeys())), "keys"
	}
	return 1, ""
}
