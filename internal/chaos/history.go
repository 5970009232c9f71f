package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// Class is what an operation's outcome tells about its effect.
type Class string

const (
	// ClassOK is a success: the effect happened (or had happened, for a
	// retry answered as such).
	ClassOK Class = "ok"
	// ClassFailed is a definite refusal: the operation changed nothing
	// (LEASE_LOST, RESULT_CONFLICT, INVALID_ARGUMENT, a sink write refused
	// for its token, ...).
	ClassFailed Class = "failed"
	// ClassIndeterminate is an operation whose effect is unknown: it timed
	// out, the server was UNAVAILABLE, the connection broke, or its process
	// was killed before it returned.
	ClassIndeterminate Class = "indeterminate"
)

// Operation names recorded in the history besides the LedgerService RPCs
// (Reserve, Heartbeat, Complete, Fail, Release, Lookup).
const (
	// MethodDo is one ledgerclient.Do call (or one bare Reserve→Complete
	// attempt by a raw worker).
	MethodDo = "Do"
	// MethodSinkFenced is a write to the fenced sink.
	MethodSinkFenced = "SinkFenced"
	// MethodSinkControl is a write to the unfenced control sink.
	MethodSinkControl = "SinkControl"
)

// Op is one operation of the history: one RPC attempt, one Do call or one
// sink write, with its invocation and its outcome.
type Op struct {
	// Worker names the worker that made the call ("g3", "p1.2").
	Worker string `json:"w"`
	// Seq numbers the worker process's operations; with Worker it pairs an
	// invocation with its outcome.
	Seq uint64 `json:"q"`
	// Method is the RPC's name (Reserve, Complete, ...) or one of the
	// Method constants.
	Method string `json:"m"`
	// Key is the ledger key the operation is about.
	Key string `json:"k,omitempty"`
	// Token is the fencing token the call carried (Heartbeat, Complete,
	// Fail, Release, sink writes), or the one it got back (Reserve ACQUIRED
	// or COMPLETED, Do).
	Token int64 `json:"t,omitempty"`
	// Value is the result that Complete carried, or that a Reserve replayed.
	Value string `json:"v,omitempty"`
	// Reply is the in-band answer: a Reserve outcome (acquired, completed,
	// in_progress, failed), "already" for a Complete/Fail/Release that
	// repeated a recorded one, "accepted"/"refused" for a sink write,
	// "replayed" for a Do that replayed a result.
	Reply string `json:"r,omitempty"`
	// Code is the gRPC status code name ("OK" on success).
	Code string `json:"c,omitempty"`
	// Class classifies the outcome; empty while the operation runs.
	Class Class `json:"x,omitempty"`
	// Start and End are the invocation and the outcome, in Unix
	// nanoseconds by the machine's clock (shared by every process). End is
	// zero when no outcome was ever recorded.
	Start int64 `json:"s"`
	End   int64 `json:"e,omitempty"`
}

// Recorder receives a history's operations: each when it is invoked, and
// again with its outcome. Implementations are safe for concurrent use.
type Recorder interface {
	Invoke(op Op)
	Return(op Op)
}

// History is the in-memory history of a scenario: every operation of the
// harness's own workers, and those the worker processes report.
type History struct {
	mu  sync.Mutex
	ops map[opID]*Op
	// completed holds the keys with a successful Complete, so that a
	// scenario knows its size while it runs.
	completed map[string]struct{}
	// last is each worker's latest operation, for nemeses that aim.
	last map[string]Op
}

type opID struct {
	worker string
	seq    uint64
}

// NewHistory returns an empty History.
func NewHistory() *History {
	return &History{ops: map[opID]*Op{}, completed: map[string]struct{}{}, last: map[string]Op{}}
}

// Invoke records an operation's invocation.
func (h *History) Invoke(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.ops[opID{op.Worker, op.Seq}]; !ok {
		h.ops[opID{op.Worker, op.Seq}] = &op
	}
	h.last[op.Worker] = op
}

// Return records an operation's outcome.
func (h *History) Return(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops[opID{op.Worker, op.Seq}] = &op
	if last, ok := h.last[op.Worker]; !ok || last.Seq <= op.Seq {
		h.last[op.Worker] = op
	}
	if op.Method == "Complete" && op.Class == ClassOK {
		h.completed[op.Key] = struct{}{}
	}
}

// Completed counts the keys with a successful Complete so far.
func (h *History) Completed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.completed)
}

// inWork reports whether a worker whose name starts with prefix has just
// been granted a lease and is in its work: its latest operation is a
// Reserve that returned ACQUIRED.
func (h *History) inWork(prefix string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for worker, op := range h.last {
		if strings.HasPrefix(worker, prefix) && op.Method == "Reserve" && op.Reply == "acquired" {
			return true
		}
	}
	return false
}

// Ops returns the operations, ordered by invocation. An operation that
// never returned is indeterminate.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := make([]Op, 0, len(h.ops))
	for _, op := range h.ops {
		o := *op
		if o.End == 0 {
			o.Class = ClassIndeterminate
			if o.Code == "" {
				o.Code = "NO_OUTCOME"
			}
		}
		ops = append(ops, o)
	}
	h.mu.Unlock()
	sort.Slice(ops, func(i, j int) bool { return ops[i].Start < ops[j].Start })
	return ops
}

// lineRecorder writes a worker process's operations to its parent as JSON
// lines: "i" lines for invocations, "r" lines for outcomes. Each line is
// written through at once: a worker that is killed must have reported
// everything it did up to then.
type lineRecorder struct {
	mu  sync.Mutex
	enc *json.Encoder
}

type line struct {
	Phase string `json:"p"`
	Op
}

func newLineRecorder(w io.Writer) *lineRecorder { return &lineRecorder{enc: json.NewEncoder(w)} }

// Invoke writes an "i" line.
func (l *lineRecorder) Invoke(op Op) { l.write("i", op) }

// Return writes an "r" line.
func (l *lineRecorder) Return(op Op) { l.write("r", op) }

func (l *lineRecorder) write(phase string, op Op) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.enc.Encode(line{Phase: phase, Op: op}) // a broken pipe means the parent is gone
}

// decodeLines feeds a worker process's JSON lines into rec until r ends.
func decodeLines(r io.Reader, rec Recorder) error {
	dec := json.NewDecoder(r)
	for {
		var l line
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if l.Phase == "i" {
			rec.Invoke(l.Op)
		} else {
			rec.Return(l.Op)
		}
	}
}

// tracer stamps operations with a worker name and sequence numbers and
// hands them to a Recorder.
type tracer struct {
	rec Recorder
	seq atomic.Uint64
}

// begin records op's invocation and returns a function that records its
// outcome: err's class and code, unless the caller set them.
func (t *tracer) begin(worker string, op Op) func(op *Op, err error) {
	op.Worker = worker
	op.Seq = t.seq.Add(1)
	op.Start = time.Now().UnixNano()
	t.rec.Invoke(op)
	return func(done *Op, err error) {
		done.Worker, done.Seq, done.Start = op.Worker, op.Seq, op.Start
		done.End = time.Now().UnixNano()
		if done.Class == "" {
			done.Class, done.Code = classify(err)
		}
		t.rec.Return(*done)
	}
}

type workerKey struct{}

// withWorker names the worker whose calls ctx carries.
func withWorker(ctx context.Context, worker string) context.Context {
	return context.WithValue(ctx, workerKey{}, worker)
}

func workerFrom(ctx context.Context) string {
	w, _ := ctx.Value(workerKey{}).(string)
	return w
}

// interceptor records every RPC attempt, and bounds each with
// attemptTimeout so that a hung server costs one attempt, not the call:
// ledgerclient then retries.
func (t *tracer) interceptor(attemptTimeout time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		op := describeRequest(path.Base(method), req)
		done := t.begin(workerFrom(ctx), op)
		timeout := attemptTimeout
		if r, ok := req.(*ledgerv1.ReserveRequest); ok {
			timeout += r.GetWaitTimeout().AsDuration() // the server may hold it that long
		}
		attemptCtx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := invoker(attemptCtx, method, req, reply, cc, opts...)
		if err == nil {
			describeReply(&op, reply)
		}
		done(&op, err)
		return err
	}
}

// describeRequest records the key, token and result a request carries.
func describeRequest(method string, req any) Op {
	op := Op{Method: method}
	switch r := req.(type) {
	case *ledgerv1.ReserveRequest:
		op.Key = r.GetKey()
	case *ledgerv1.HeartbeatRequest:
		op.Key, op.Token = r.GetKey(), r.GetFencingToken()
	case *ledgerv1.CompleteRequest:
		op.Key, op.Token, op.Value = r.GetKey(), r.GetFencingToken(), string(r.GetResult())
	case *ledgerv1.FailRequest:
		op.Key, op.Token = r.GetKey(), r.GetFencingToken()
	case *ledgerv1.ReleaseRequest:
		op.Key, op.Token = r.GetKey(), r.GetFencingToken()
	case *ledgerv1.LookupRequest:
		op.Key = r.GetKey()
	}
	return op
}

// describeReply records the in-band answer of a successful RPC.
func describeReply(op *Op, reply any) {
	switch r := reply.(type) {
	case *ledgerv1.ReserveResponse:
		switch o := r.GetOutcome().(type) {
		case *ledgerv1.ReserveResponse_Acquired:
			op.Reply, op.Token = "acquired", o.Acquired.GetFencingToken()
		case *ledgerv1.ReserveResponse_Completed:
			op.Reply, op.Token, op.Value = "completed", o.Completed.GetFencingToken(), string(o.Completed.GetResult())
		case *ledgerv1.ReserveResponse_InProgress:
			op.Reply = "in_progress"
		case *ledgerv1.ReserveResponse_Failed:
			op.Reply = "failed"
		}
	case *ledgerv1.CompleteResponse:
		if r.GetAlreadyCompleted() {
			op.Reply = "already"
		}
	case *ledgerv1.FailResponse:
		if r.GetAlreadyFailed() {
			op.Reply = "already"
		}
	case *ledgerv1.ReleaseResponse:
		if r.GetAlreadyReleased() {
			op.Reply = "already"
		}
	}
}

// classify turns an RPC's error into its class and status code name.
// UNAVAILABLE, DEADLINE_EXCEEDED, CANCELED, INTERNAL and UNKNOWN are
// indeterminate: the call may have taken effect.
func classify(err error) (Class, string) {
	if err == nil {
		return ClassOK, codes.OK.String()
	}
	code := status.Code(err)
	if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	} else if errors.Is(err, context.Canceled) {
		code = codes.Canceled
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown, codes.DataLoss:
		return ClassIndeterminate, codeName(code)
	default:
		return ClassFailed, codeName(code)
	}
}

// codeName is a status code's name as in the gRPC spec (UNAVAILABLE).
func codeName(code codes.Code) string {
	if code == codes.OK {
		return "OK"
	}
	name := code.String()
	out := make([]byte, 0, len(name)+4)
	for i := range len(name) {
		c := name[i]
		if c >= 'A' && c <= 'Z' && i > 0 {
			out = append(out, '_')
		}
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}
