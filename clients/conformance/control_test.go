package conformance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// control is the HTTP control server of one language's cluster (see
// README.md, "The control server"): the scenarios' hands on the proxy, the
// replicas, other workers and the database.
type control struct {
	tb      testing.TB
	cluster *cluster
	// prefix is the language's namespace prefix: a namespace in a request
	// body that does not start with it is taken as relative to it, since a
	// scenario file names its namespace by the scenario's name alone.
	prefix string

	// background holds the actions that outlive their request (a held key
	// finished later, a replica stopped later); the test waits for them,
	// after closing done to cut their waits short.
	background sync.WaitGroup
	done       chan struct{}
}

// startControl serves the control server on a loopback port until tb ends,
// and returns its base URL.
func startControl(tb testing.TB, c *cluster, prefix string) string {
	tb.Helper()
	ctl := &control{tb: tb, cluster: c, prefix: prefix, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /proxy/down", ctl.answer(func(*http.Request) (any, error) { c.proxy.Cut(); return nil, nil }))
	mux.HandleFunc("POST /proxy/up", ctl.answer(func(*http.Request) (any, error) { c.proxy.Heal(); return nil, nil }))
	mux.HandleFunc("POST /replica/{name}/{action}", ctl.answer(ctl.replicaAction))
	mux.HandleFunc("GET /replica/{name}/calls", ctl.answer(func(r *http.Request) (any, error) {
		rep, err := ctl.replica(r)
		if err != nil {
			return nil, err
		}
		return map[string]int64{"calls": rep.calls.Load()}, nil
	}))
	mux.HandleFunc("POST /calls/reset", ctl.answer(func(*http.Request) (any, error) {
		for _, rep := range c.replicas {
			rep.calls.Store(0)
		}
		return nil, nil
	}))
	mux.HandleFunc("POST /reset", ctl.answer(ctl.reset))
	mux.HandleFunc("POST /hold", ctl.answer(ctl.hold))
	mux.HandleFunc("POST /complete_other", ctl.answer(ctl.completeOther))
	mux.HandleFunc("POST /steal", ctl.answer(ctl.steal))
	mux.HandleFunc("GET /entry", ctl.answer(ctl.entry))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(tb, srv.Shutdown(ctx))
		require.ErrorIs(tb, <-served, http.ErrServerClosed)
		close(ctl.done)
		ctl.background.Wait()
	})
	return "http://" + lis.Addr().String()
}

// httpError is an error with the HTTP status to answer it with.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// unmet answers a request whose expectation does not hold (409), so that
// the runner's control step fails with the message.
func unmet(format string, args ...any) error {
	return &httpError{http.StatusConflict, fmt.Sprintf(format, args...)}
}

// answer turns a handler's result into JSON (200, {} for nil) and its error
// into {"error": message} with the error's status (500 unless an
// *httpError says otherwise).
func (ctl *control) answer(handle func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		result, err := handle(r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			status := http.StatusInternalServerError
			var he *httpError
			if errors.As(err, &he) {
				status = he.status
			}
			ctl.tb.Logf("control: %s %s: %d %v", r.Method, r.URL, status, err)
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		if result == nil {
			result = struct{}{}
		}
		_ = json.NewEncoder(w).Encode(result)
	}
}

// decode reads an optional JSON body into v, refusing unknown fields so
// that a typo in a scenario fails instead of being ignored.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("body: %v", err)
	}
	return nil
}

// namespace returns a request's namespace as the ledger knows it.
func (ctl *control) namespace(ns string) (string, error) {
	if ns == "" {
		return "", badRequest("namespace is required")
	}
	if strings.HasPrefix(ns, ctl.prefix) {
		return ns, nil
	}
	return ctl.prefix + ns, nil
}

// keyRef is the part every key operation's body shares.
type keyRef struct {
	Namespace string `json:"namespace"`
	Key       string `json:"key"`
}

// decodeKeyed reads a key operation's body into req, whose keyRef is ref,
// and returns the namespace as the ledger knows it.
func (ctl *control) decodeKeyed(r *http.Request, req any, ref *keyRef) (string, error) {
	if err := decode(r, req); err != nil {
		return "", err
	}
	return ctl.namespace(ref.Namespace)
}

// acquire makes another worker reserve a key for the operation op, and
// returns its fencing token; a key the worker does not acquire fails the
// step, saying why (notFree) and what the ledger answered.
func (ctl *control) acquire(ctx context.Context, op string, req ledger.ReserveRequest, notFree string) (int64, error) {
	reservation, err := ctl.cluster.control.Store.Reserve(ctx, req)
	if err != nil {
		return 0, err
	}
	if reservation.Outcome != ledger.Acquired {
		return 0, unmet("%s %s/%s: %s: %s", op, req.Namespace, req.Key, notFree, reservation.Outcome)
	}
	return reservation.FencingToken, nil
}

func (ctl *control) replica(r *http.Request) (*replica, error) {
	rep, ok := ctl.cluster.replicas[r.PathValue("name")]
	if !ok {
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("no replica %q: a or b", r.PathValue("name"))}
	}
	return rep, nil
}

// reset puts the cluster back as it started: the proxy up, both replicas
// serving, the call counters at 0. Every scenario begins with it, so that a
// scenario that failed halfway (its proxy left down, say) does not fail the
// ones after it.
func (ctl *control) reset(*http.Request) (any, error) {
	ctl.cluster.proxy.Heal()
	for _, rep := range ctl.cluster.replicas {
		if err := rep.setServing(true); err != nil {
			return nil, err
		}
		rep.calls.Store(0)
	}
	return nil, nil
}

// replicaAction serves POST /replica/{a|b}/{action}.
func (ctl *control) replicaAction(r *http.Request) (any, error) {
	rep, err := ctl.replica(r)
	if err != nil {
		return nil, err
	}
	switch action := r.PathValue("action"); action {
	case "not_serving":
		return nil, rep.setServing(false)
	case "serving":
		return nil, rep.setServing(true)
	case "start":
		return nil, rep.start()
	case "stop":
		return nil, ctl.stopReplica(r, rep)
	case "expect_stopped":
		select {
		case <-rep.isStopped():
			return nil, nil
		case <-time.After(30 * time.Second):
			return nil, unmet("replica %s did not stop within 30s", rep.name)
		}
	case "expect_calls":
		var bounds struct {
			Min *int64 `json:"min"`
			Max *int64 `json:"max"`
		}
		if err := decode(r, &bounds); err != nil {
			return nil, err
		}
		calls := rep.calls.Load()
		if bounds.Min != nil && calls < *bounds.Min {
			return nil, unmet("replica %s served %d ledger calls since the last reset, expected at least %d", rep.name, calls, *bounds.Min)
		}
		if bounds.Max != nil && calls > *bounds.Max {
			return nil, unmet("replica %s served %d ledger calls since the last reset, expected at most %d", rep.name, calls, *bounds.Max)
		}
		return map[string]int64{"calls": calls}, nil
	default:
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("no replica action %q", action)}
	}
}

// stopReplica stops the replica now, or, with {"after_calls": N}, answers at
// once and stops it in the background once it has served N more ledger
// calls (or 30s have passed), so that a scenario can stop it in the middle
// of its next steps, whatever the machine's speed.
func (ctl *control) stopReplica(r *http.Request, rep *replica) error {
	var req struct {
		AfterCalls int64 `json:"after_calls"`
	}
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.AfterCalls <= 0 {
		rep.stop()
		return nil
	}
	from := rep.calls.Load()
	ctl.background.Go(func() {
		deadline := time.Now().Add(30 * time.Second)
		for rep.calls.Load()-from < req.AfterCalls && time.Now().Before(deadline) {
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctl.done:
				return // the test is over: the cluster stops the replica
			}
		}
		rep.stop()
	})
	return nil
}

// holdRequest is POST /hold's body.
type holdRequest struct {
	keyRef
	Owner   string `json:"owner"`
	AfterMS int    `json:"after_ms"`
	Then    string `json:"then"`
	Result  string `json:"result"`
}

// hold makes another worker reserve the key now and, after after_ms,
// complete, release or fail it permanently. It answers once the key is
// held.
func (ctl *control) hold(r *http.Request) (any, error) {
	var req holdRequest
	ns, err := ctl.decodeKeyed(r, &req, &req.keyRef)
	if err != nil {
		return nil, err
	}
	if req.Owner == "" {
		req.Owner = "holder"
	}
	if req.Then != "complete" && req.Then != "release" && req.Then != "fail" {
		return nil, badRequest("then must be complete, release or fail, got %q", req.Then)
	}
	after := time.Duration(req.AfterMS) * time.Millisecond
	store := ctl.cluster.control.Store
	// The lease outlasts the hold by far, so that it ends as the scenario
	// says, not by running out.
	token, err := ctl.acquire(r.Context(), "hold",
		ledger.ReserveRequest{Namespace: ns, Key: req.Key, Owner: req.Owner, LeaseTTL: after + time.Minute}, "the key is not free")
	if err != nil {
		return nil, err
	}
	ctl.background.Go(func() {
		select {
		case <-time.After(after):
		case <-ctl.done:
			return // the test is over
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		switch req.Then {
		case "complete":
			_, err = store.Complete(ctx, ledger.CompleteRequest{Namespace: ns, Key: req.Key, FencingToken: token, Result: []byte(req.Result)})
		case "release":
			_, err = store.Release(ctx, ledger.ReleaseRequest{Namespace: ns, Key: req.Key, FencingToken: token})
		case "fail":
			_, err = store.Fail(ctx, ledger.FailRequest{Namespace: ns, Key: req.Key, FencingToken: token,
				Error: &ledger.WorkError{Message: "failed by the holder"}})
		}
		switch {
		case errors.Is(err, ledger.ErrLeaseLost):
			// Taken over meanwhile (a steal): the holder lost its lease, as a
			// worker would.
			ctl.tb.Logf("control: hold %s/%s then %s: %v", ns, req.Key, req.Then, err)
		case err != nil:
			ctl.tb.Errorf("control: hold %s/%s then %s: %v", ns, req.Key, req.Then, err)
		}
	})
	return map[string]int64{"fencing_token": token}, nil
}

// completeOther makes another worker (owner "other") reserve and complete
// the key at once, bypassing the proxy.
func (ctl *control) completeOther(r *http.Request) (any, error) {
	var req struct {
		keyRef
		Result string `json:"result"`
	}
	ns, err := ctl.decodeKeyed(r, &req, &req.keyRef)
	if err != nil {
		return nil, err
	}
	token, err := ctl.acquire(r.Context(), "complete_other",
		ledger.ReserveRequest{Namespace: ns, Key: req.Key, Owner: "other", WaitTimeout: 10 * time.Second}, "the key is not free")
	if err != nil {
		return nil, err
	}
	_, err = ctl.cluster.control.Store.Complete(r.Context(), ledger.CompleteRequest{Namespace: ns, Key: req.Key, FencingToken: token, Result: []byte(req.Result)})
	if err != nil {
		return nil, err
	}
	return map[string]int64{"fencing_token": token}, nil
}

// steal force-releases the key, as an operator would, and reserves it as
// owner "thief" with a long lease: the worker that held it has lost it.
func (ctl *control) steal(r *http.Request) (any, error) {
	var req keyRef
	ns, err := ctl.decodeKeyed(r, &req, &req)
	if err != nil {
		return nil, err
	}
	store := ctl.cluster.control.Store
	if _, _, err := store.ForceRelease(r.Context(), ledger.ForceReleaseRequest{Namespace: ns, Key: req.Key, Reason: "conformance: steal"}); err != nil {
		return nil, err
	}
	token, err := ctl.acquire(r.Context(), "steal",
		ledger.ReserveRequest{Namespace: ns, Key: req.Key, Owner: "thief", LeaseTTL: 5 * time.Minute}, "the key could not be taken over")
	if err != nil {
		return nil, err
	}
	return map[string]int64{"fencing_token": token}, nil
}

// entryAnswer is GET /entry's answer: the row as the database holds it.
type entryAnswer struct {
	State          string     `json:"state"`
	Owner          string     `json:"owner"`
	FencingToken   int64      `json:"fencing_token"`
	Attempts       int        `json:"attempts"`
	Result         *string    `json:"result"`
	ErrorMessage   *string    `json:"error_message"`
	LeaseExpiresAt *time.Time `json:"lease_expires_at"`
}

// entry serves GET /entry?namespace=&key=, 404 when the key has no row.
func (ctl *control) entry(r *http.Request) (any, error) {
	ns, err := ctl.namespace(r.URL.Query().Get("namespace"))
	if err != nil {
		return nil, err
	}
	key := r.URL.Query().Get("key")
	var e entryAnswer
	var result []byte
	err = ctl.cluster.control.Pool.QueryRow(r.Context(),
		`SELECT state, owner, fencing_token, attempts, result, error_message, lease_expires_at
		   FROM entries WHERE namespace = $1 AND key = $2`, ns, key).
		Scan(&e.State, &e.Owner, &e.FencingToken, &e.Attempts, &result, &e.ErrorMessage, &e.LeaseExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("no entry %s/%s", ns, key)}
	}
	if err != nil {
		return nil, err
	}
	if result != nil {
		text := string(result)
		e.Result = &text
	}
	return e, nil
}
