package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// An Op performs one operation of a workload (one call, or the calls of
// one pipeline step) and reports what it did. An Op belongs to one worker
// and is never called concurrently with itself.
type Op func(ctx context.Context) (Done, error)

// Done is what one Op did.
type Done struct {
	// Items is how many keys the operation handled; 0 counts as 1. A batch
	// operation counts its keys, so that keys/s can be compared with the
	// single-key workloads.
	Items int
	// Outcome names the ledger's answer ("acquired", "in_progress", …) for
	// the run's outcome counts; empty is not counted.
	Outcome string
}

// Workload is a named benchmark with a ledgerd side and a raw-SQL side
// that runs the very statements ledgerd runs for it. Either side may be
// nil when the workload has none; a run skips it.
type Workload struct {
	Name        string
	Description string
	// Ledgerd returns worker's operation against ledgerd.
	Ledgerd func(s *session, worker int) Op
	// Raw returns worker's operation against PostgreSQL.
	Raw func(s *session, worker int) Op
	// Calls is the number of RPCs one operation makes through ledgerd (0
	// counts as 1): a latency overhead subtracts the floor that many
	// times.
	Calls int
	// readKeys: the workload reads completed keys (replay, lookup), which
	// are made before it runs unless the ledger is prefilled.
	readKeys bool
}

// FloorWorkload names the floor: the cheapest call ledgerd serves.
const FloorWorkload = "floor"

// Workloads lists every workload, in the order a default run takes them.
var Workloads = []Workload{
	{
		Name: FloorWorkload,
		Description: "the gRPC health Check, the cheapest call ledgerd serves, through the same connections: the transport floor " +
			"that each workload's latency overhead is measured above (no database, no raw side)",
		Ledgerd: ledgerdFloor,
	},
	{
		Name:        "pair",
		Description: "Reserve of a fresh key, then Complete: the common pipeline step (statements reserve_insert, complete)",
		Ledgerd:     ledgerdPair,
		Raw:         rawPair,
		Calls:       2,
	},
	{
		Name:        "replay",
		Description: "Reserve of an already completed key: the retry path (statement reserve_insert, which finds the key)",
		Ledgerd:     ledgerdReplay,
		Raw:         rawReplay,
		readKeys:    true,
	},
	{
		Name:        "lookup",
		Description: "Lookup of a completed key (statement lookup)",
		Ledgerd:     ledgerdLookup,
		Raw:         rawLookup,
		readKeys:    true,
	},
	{
		Name: "contended",
		Description: "every worker Reserves one of --contended-keys keys with a --contended-lease-ttl lease and never completes it: " +
			"IN_PROGRESS answers, and a takeover whenever a lease runs out (statements reserve_insert, reserve_takeover)",
		Ledgerd: ledgerdContended,
		Raw:     rawContended,
	},
	{
		// ---------------------------------------------------------------
		Name:        "batch",
		Description: "ReserveBatch then CompleteBatch of --batch-size fresh keys (counts keys; statements reserve_insert_batch, complete_batch)",
		Ledgerd:     ledgerdBatch,
		Raw:         rawBatch,
		Calls:       2,
	},
}

// calls is the number of RPCs one operation makes.
func (w Workload) calls() int { return max(w.Calls, 1) }

func workloadByName(name string) (Workload, bool) {
	for _, w := range Workloads {
		if w.Name == name {
			return w, true
		}
	}
	return Workload{}, false
}

func workloadNames() []string {
	names := make([]string, len(Workloads))
	for i, w := range Workloads {
		names[i] = w.Name
	}
	return names
}

// session is one measurement: one workload on one side at one
// concurrency. Its keys are its own (prefix), except the completed keys
// that replay and lookup read.
type session struct {
	cfg      Config
	clients  [][]ledgerv1.LedgerServiceClient // by ledgerd, then connection
	health   [][]healthpb.HealthClient        // the same connections' health service
	raw      *rawDB
	prefix   string       // of the session's own keys
	next     atomic.Int64 // the number of the next fresh key
	grants   atomic.Int64 // numbers the owners
	readKeys keySet
}

// client is the gRPC client worker uses: the workers are spread round
// robin over the ledgerd processes, then over each one's connections.
func (s *session) client(worker int) ledgerv1.LedgerServiceClient {
	conns := s.clients[worker%len(s.clients)]
	return conns[worker/len(s.clients)%len(conns)]
}

// healthClient is the health client of the connection client(worker)
// uses.
func (s *session) healthClient(worker int) healthpb.HealthClient {
	conns := s.health[worker%len(s.health)]
	return conns[worker/len(s.health)%len(conns)]
}

// freshKey returns a key that nobody has used: the session's keys are
// numbered from 0, as a keySet's.
func (s *session) freshKey() string {
	return keySet{prefix: s.prefix}.key(s.next.Add(1) - 1)
}

// freshKeys returns n keys that nobody has used.
func (s *session) freshKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = s.freshKey()
	}
	return keys
}

// owner names worker's n-th grant, so that no Reserve is a same-owner
// retry (which would extend instead of taking over).
func (s *session) owner(worker int) string {
	return fmt.Sprintf("ledgerbench/%d/%d", worker, s.grants.Add(1))
}

// keySet is a range of keys named prefix followed by a 10-digit number,
// 0 to count-1: the prefilled keys, or the completed keys a run makes for
// replay and lookup.
type keySet struct {
	prefix string
	count  int64
}

func (k keySet) key(i int64) string { return fmt.Sprintf("%s%010d", k.prefix, i) }

// random returns a key of the set, drawn uniformly.
func (k keySet) random(rng *rand.Rand) string { return k.key(rng.Int64N(k.count)) }

func newRand(worker int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(worker), rand.Uint64()))
}

// The result every Complete stores.
var result = []byte("ok")

func ledgerdFloor(s *session, worker int) Op {
	client := s.healthClient(worker)
	return func(ctx context.Context) (Done, error) {
		r, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("health Check answered %s", r.GetStatus())
		}
		return Done{}, err
	}
}

func ledgerdPair(s *session, worker int) Op {
	client := s.client(worker)
	owner := fmt.Sprintf("ledgerbench/%d", worker)
	return func(ctx context.Context) (Done, error) {
		key := s.freshKey()
		r, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: s.cfg.Namespace, Key: key, Owner: owner})
		if err != nil {
			return Done{}, err
		}
		acquired := r.GetAcquired()
		if acquired == nil {
			return Done{}, unexpected("reserve of a fresh key", r)
		}
		_, err = client.Complete(ctx, &ledgerv1.CompleteRequest{
			Namespace: s.cfg.Namespace, Key: key, FencingToken: acquired.GetFencingToken(), Result: result,
		})
		return Done{}, err
	}
}

func ledgerdReplay(s *session, worker int) Op {
	client := s.client(worker)
	rng := newRand(worker)
	owner := fmt.Sprintf("ledgerbench/%d", worker)
	return func(ctx context.Context) (Done, error) {
		r, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: s.cfg.Namespace, Key: s.readKeys.random(rng), Owner: owner})
		if err != nil {
			return Done{}, err
		}
		if r.GetCompleted() == nil {
			return Done{}, unexpected("reserve of a completed key", r)
		}
		return Done{}, nil
	}
}

func ledgerdLookup(s *session, worker int) Op {
	client := s.client(worker)
	rng := newRand(worker)
	return func(ctx context.Context) (Done, error) {
		_, err := client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: s.cfg.Namespace, Key: s.readKeys.random(rng)})
		return Done{}, err
	}
}

func ledgerdContended(s *session, worker int) Op {
	client := s.client(worker)
	rng := newRand(worker)
	keys := keySet{prefix: s.prefix, count: int64(s.cfg.ContendedKeys)}
	ttl := durationpb.New(s.cfg.ContendedLeaseTTL)
	return func(ctx context.Context) (Done, error) {
		r, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{
			Namespace: s.cfg.Namespace, Key: keys.random(rng), Owner: s.owner(worker), LeaseTtl: ttl,
		})
		if err != nil {
			return Done{}, err
		}
		switch {
		case r.GetAcquired().GetTakeover():
			return Done{Outcome: outcomeTakeover}, nil
		case r.GetAcquired() != nil:
			return Done{Outcome: outcomeAcquired}, nil
		case r.GetInProgress() != nil:
			return Done{Outcome: outcomeInProgress}, nil
		}
		return Done{}, unexpected("contended reserve", r)
	}
}

// The outcomes the contended workload counts.
const (
	outcomeAcquired   = "acquired"
	outcomeTakeover   = "takeover"
	outcomeInProgress = "in_progress"
)

func unexpected(what string, r *ledgerv1.ReserveResponse) error {
	return fmt.Errorf("%s answered %T", what, r.GetOutcome())
}

func ledgerdBatch(s *session, worker int) Op {
	client := s.client(worker)
	owner := fmt.Sprintf("ledgerbench/%d", worker)
	return func(ctx context.Context) (Done, error) {
		keys := s.freshKeys(s.cfg.BatchSize)
		reserve := &ledgerv1.ReserveBatchRequest{Namespace: s.cfg.Namespace, Owner: owner, Items: make([]*ledgerv1.ReserveBatchItem, len(keys))}
		for i, key := range keys {
			reserve.Items[i] = &ledgerv1.ReserveBatchItem{Key: key}
		}
		reserved, err := client.ReserveBatch(ctx, reserve)
		if err != nil {
			return Done{}, err
		}
		complete := &ledgerv1.CompleteBatchRequest{Namespace: s.cfg.Namespace, Items: make([]*ledgerv1.CompleteBatchItem, len(keys))}
		for i, r := range reserved.GetResults() {
			acquired := r.GetReserved().GetAcquired()
			if acquired == nil {
				return Done{}, fmt.Errorf("batch reserve of a fresh key answered %v", r)
			}
			complete.Items[i] = &ledgerv1.CompleteBatchItem{Key: keys[i], FencingToken: acquired.GetFencingToken(), Result: result}
		}
		completed, err := client.CompleteBatch(ctx, complete)
		if err != nil {
			return Done{}, err
		}
		for _, r := range completed.GetResults() {
			if r.GetError() != nil {
				return Done{}, fmt.Errorf("batch complete: %v", r.GetError())
			}
		}
		return Done{Items: len(keys)}, nil
	}
}

func rawBatch(s *session, worker int) Op {
	owner := fmt.Sprintf("ledgerbench/%d", worker)
	return func(ctx context.Context) (Done, error) {
		keys := s.freshKeys(s.cfg.BatchSize)
		tokens, err := s.raw.reserveBatch(ctx, s.cfg.Namespace, keys, owner, defaultLeaseTTL)
		if err != nil {
			return Done{}, err
		}
		return Done{Items: len(keys)}, s.raw.completeBatch(ctx, s.cfg.Namespace, keys, tokens)
	}
}

func rawPair(s *session, worker int) Op {
	owner := fmt.Sprintf("ledgerbench/%d", worker)
	return func(ctx context.Context) (Done, error) {
		key := s.freshKey()
		row, err := s.raw.reserveInsert(ctx, s.cfg.Namespace, key, owner, defaultLeaseTTL)
		if err != nil {
			return Done{}, err
		}
		if !row.inserted {
			return Done{}, fmt.Errorf("reserve_insert of a fresh key found it %s", row.state)
		}
		return Done{}, s.raw.complete(ctx, s.cfg.Namespace, key, row.fencingToken)
	}
}

func rawReplay(s *session, worker int) Op {
	rng := newRand(worker)
	owner := fmt.Sprintf("ledgerbench/%d", worker)
	return func(ctx context.Context) (Done, error) {
		row, err := s.raw.reserveInsert(ctx, s.cfg.Namespace, s.readKeys.random(rng), owner, defaultLeaseTTL)
		if err != nil {
			return Done{}, err
		}
		if row.inserted || row.state != "completed" {
			return Done{}, fmt.Errorf("reserve_insert of a completed key found it %s (inserted %t)", row.state, row.inserted)
		}
		return Done{}, nil
	}
}

func rawLookup(s *session, worker int) Op {
	rng := newRand(worker)
	return func(ctx context.Context) (Done, error) {
		return Done{}, s.raw.lookup(ctx, s.cfg.Namespace, s.readKeys.random(rng))
	}
}

func rawContended(s *session, worker int) Op {
	rng := newRand(worker)
	keys := keySet{prefix: s.prefix, count: int64(s.cfg.ContendedKeys)}
	return func(ctx context.Context) (Done, error) {
		outcome, err := s.raw.contendedReserve(ctx, s.cfg.Namespace, keys.random(rng), s.owner(worker), s.cfg.ContendedLeaseTTL)
		return Done{Outcome: outcome}, err
	}
}
