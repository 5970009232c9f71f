package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// Workload is what every worker does with a key, in one scenario.
type Workload struct {
	// Namespace is the scenario's own namespace.
	Namespace string `json:"namespace"`
	// LeaseTTL is the lease the workers ask for.
	LeaseTTL time.Duration `json:"lease_ttl"`
	// WorkTime is how long the work takes, on average (±50%).
	WorkTime time.Duration `json:"work_time"`
	// DoTimeout bounds one key's Do (or raw Reserve→Complete) call.
	DoTimeout time.Duration `json:"do_timeout"`
	// AttemptTimeout bounds one RPC attempt; ledgerclient retries after it.
	AttemptTimeout time.Duration `json:"attempt_timeout"`
}

// workerSpec is one worker: a loop over the keys of its chain.
type workerSpec struct {
	// Name identifies the worker in the history ("g3", "p1.2").
	Name string `json:"name"`
	// Chain and Start: the worker takes the keys chainKey(Chain, Start),
	// chainKey(Chain, Start+1), ... Every chain has two or more workers, so
	// that they race for its keys, and a worker that stops (paused,
	// killed) leaves its key to the others once its lease runs out.
	Chain int `json:"chain"`
	Start int `json:"start"`
	// Raw workers call Reserve and Complete themselves, without Do's
	// heartbeats and without its check of the lease before Complete, and
	// they complete even when the fenced sink refused their write: a raw
	// worker that was paused sends its late Complete.
	Raw bool `json:"raw"`
}

// chainKey names key i of a chain; parseChainKey reverses it.
func chainKey(chain, i int) string { return fmt.Sprintf("c%03d-%07d", chain, i) }

func parseChainKey(key string) (chain, i int, ok bool) {
	c, n, found := strings.Cut(key, "-")
	if !found || !strings.HasPrefix(c, "c") {
		return 0, 0, false
	}
	chain, err1 := strconv.Atoi(c[1:])
	i, err2 := strconv.Atoi(n)
	return chain, i, err1 == nil && err2 == nil
}

// errSuperseded is the work's error when the fenced sink refused its write:
// a worker with a newer token wrote first, so this one was taken over.
var errSuperseded = errors.New("the fenced sink refused the write: superseded by a newer token")

// workers is what the workers of one process share: the client, the sink
// and the history.
type workers struct {
	client *ledgerclient.Client
	sink   *Sink
	tracer *tracer
	load   Workload
	owners atomic.Uint64
}

// newClient returns a ledgerclient that spreads calls over addrs (round
// robin; a replica that is down is skipped) and records every attempt.
// Reconnections are tried at least every second, so that a restarted
// ledgerd is used again at once.
func newClient(addrs []string, tr *tracer, attemptTimeout time.Duration) (*ledgerclient.Client, error) {
	r := manual.NewBuilderWithScheme("chaos")
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	return ledgerclient.New("chaos:///ledgerd",
		ledgerclient.WithInsecure(),
		ledgerclient.WithDialOptions(
			grpc.WithResolvers(r),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
			grpc.WithChainUnaryInterceptor(tr.interceptor(attemptTimeout)),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: time.Second,
			}),
		))
}

// run takes the keys of spec's chain one after the other until stop ends.
// Each key is bounded by DoTimeout, so run returns at most that long after
// stop ends.
func (w *workers) run(stop context.Context, spec workerSpec) {
	for i := spec.Start; stop.Err() == nil; i++ {
		w.doKey(stop, spec, chainKey(spec.Chain, i))
	}
}

// doKey takes one key through Do (or a raw Reserve→Complete), records each
// call in the history, and returns when the key is done, failed or given
// up. Its calls do not end with stop: a worker finishes the key it has.
//
// As a pipeline on the client's defaults does, a worker whose Do fails
// because the ledger could not answer (the client's circuit breaker is
// open, or its retries were spent) tries the key again after a backoff,
// as a new owner, until the key's DoTimeout: the breaker makes Do fail
// fast during an outage instead of retrying until its context ends.
func (w *workers) doKey(stop context.Context, spec workerSpec, key string) {
	ctx, cancel := context.WithTimeout(withWorker(context.WithoutCancel(stop), spec.Name), w.load.DoTimeout)
	defer cancel()
	backoff := keyRetryBackoff
	for {
		err := w.doKeyOnce(ctx, spec, key)
		if !errors.Is(err, ledgerclient.ErrUnavailable) || ctx.Err() != nil {
			return
		}
		if sleep(ctx, backoff/2+rand.N(backoff/2)) != nil {
			return
		}
		backoff = min(2*backoff, maxKeyRetryBackoff)
	}
}

// The backoff of doKey between two tries of a key that the ledger could
// not answer.
const (
	keyRetryBackoff    = 100 * time.Millisecond
	maxKeyRetryBackoff = time.Second
)

// doKeyOnce makes one try of doKey, with an owner of its own, and records
// it in the history.
func (w *workers) doKeyOnce(ctx context.Context, spec workerSpec, key string) error {
	owner := fmt.Sprintf("%s/%d", spec.Name, w.owners.Add(1))
	done := w.tracer.begin(spec.Name, Op{Method: MethodDo, Key: key})
	var op Op
	var err error
	if spec.Raw {
		op, err = w.raw(ctx, spec.Name, key, owner)
	} else {
		var result ledgerclient.Result
		result, err = w.client.Do(ctx, w.load.Namespace, key, func(ctx context.Context) ([]byte, error) {
			lease, _ := ledgerclient.LeaseFromContext(ctx)
			return w.effect(ctx, spec.Name, key, lease.FencingToken)
		}, ledgerclient.WithOwner(owner), ledgerclient.WithLeaseTTL(w.load.LeaseTTL))
		op = Op{Token: result.FencingToken, Value: string(result.Value)}
		if result.Replayed {
			op.Reply = "replayed"
		}
	}
	op.Method, op.Key = MethodDo, key
	done(&op, err)
	return err
}

// raw takes a key with bare Reserve and Complete calls: no heartbeats, and
// a Complete sent whatever happened meanwhile.
func (w *workers) raw(ctx context.Context, worker, key, owner string) (Op, error) {
	wait := min(2*w.load.LeaseTTL, 5*time.Second)
	for ctx.Err() == nil {
		response, err := w.client.Reserve(ctx, &ledgerv1.ReserveRequest{
			Namespace:   w.load.Namespace,
			Key:         key,
			Owner:       owner,
			LeaseTtl:    durationpb.New(w.load.LeaseTTL),
			WaitTimeout: durationpb.New(wait),
		})
		if err != nil {
			return Op{}, err
		}
		switch outcome := response.GetOutcome().(type) {
		case *ledgerv1.ReserveResponse_Acquired:
			token := outcome.Acquired.GetFencingToken()
			value, err := w.effect(ctx, worker, key, token)
			if errors.Is(err, errSuperseded) {
				// A naive worker: it completes whatever the sink said, and
				// the ledger must refuse it (LEASE_LOST).
				value, err = []byte(fmt.Sprintf("%s@%d/%s", key, token, worker)), nil
			}
			if err != nil {
				_, failErr := w.client.Fail(ctx, &ledgerv1.FailRequest{
					Namespace: w.load.Namespace, Key: key, FencingToken: token, Retryable: true,
					Error: &ledgerv1.WorkError{Message: err.Error()},
				})
				return Op{Token: token}, errors.Join(err, failErr)
			}
			_, err = w.client.Complete(ctx, &ledgerv1.CompleteRequest{
				Namespace: w.load.Namespace, Key: key, FencingToken: token, Result: value,
			})
			return Op{Token: token, Value: string(value)}, err
		case *ledgerv1.ReserveResponse_Completed:
			completed := outcome.Completed
			return Op{Token: completed.GetFencingToken(), Value: string(completed.GetResult()), Reply: "replayed"}, nil
		case *ledgerv1.ReserveResponse_Failed:
			return Op{}, fmt.Errorf("key %s failed: %s", key, outcome.Failed.GetError().GetMessage())
		case *ledgerv1.ReserveResponse_InProgress:
			// The server waited for the holder, or answered at once while
			// draining: ask again after a moment.
			if sleep(ctx, 20*time.Millisecond) != nil {
				return Op{}, ctx.Err()
			}
		}
	}
	return Op{}, ctx.Err()
}

// effect is the work: it takes WorkTime, then writes the value to the
// control sink and, fenced by token, to the fenced sink. Like much real
// work it does not watch its context once started: a paused worker wakes
// up and writes anyway, and it is the fence that must stop it.
func (w *workers) effect(ctx context.Context, worker, key string, token int64) ([]byte, error) {
	value := fmt.Sprintf("%s@%d/%s", key, token, worker)
	time.Sleep(w.load.WorkTime/2 + rand.N(w.load.WorkTime+1))
	ctx = context.WithoutCancel(ctx)

	done := w.tracer.begin(worker, Op{Method: MethodSinkControl, Key: key, Token: token, Value: value})
	err := w.sink.WriteControl(ctx, w.load.Namespace, key, token, value, worker)
	done(sinkOp(MethodSinkControl, key, token, value, err == nil, err), nil)
	if err != nil {
		return nil, err
	}

	done = w.tracer.begin(worker, Op{Method: MethodSinkFenced, Key: key, Token: token, Value: value})
	accepted, err := w.sink.WriteFenced(ctx, w.load.Namespace, key, token, value, worker)
	done(sinkOp(MethodSinkFenced, key, token, value, accepted, err), nil)
	switch {
	case err != nil:
		return nil, err
	case !accepted:
		return nil, errSuperseded
	}
	return []byte(value), nil
}

// sinkOp is the history's record of a sink write.
func sinkOp(method, key string, token int64, value string, accepted bool, err error) *Op {
	op := &Op{Method: method, Key: key, Token: token, Value: value}
	switch {
	case err != nil:
		op.Class, op.Code = ClassIndeterminate, "SINK_ERROR"
	case accepted:
		op.Class, op.Code, op.Reply = ClassOK, "OK", "accepted"
	default:
		op.Class, op.Code, op.Reply = ClassFailed, "FENCED", "refused"
	}
	return op
}

// sleep waits for d or until ctx ends, and returns ctx's error then.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
