package conformance_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// ledgerConfig is the ledger the replicas serve: development mode, where a
// Reserve in an unknown namespace creates it, with the default limits.
var ledgerConfig = ledger.Config{}

// cluster is what one language's runner talks to: replicas a and b over
// one database, a proxy in front of a that the scenarios cut, and a store of
// its own for the control server (another worker, and the rows as the
// database holds them).
type cluster struct {
	proxy    *devcluster.Link
	replicas map[string]*replica
	control  ledgertest.Bundle
}

// startCluster starts the replicas and the proxy, all stopped when tb ends.
func startCluster(tb testing.TB) *cluster {
	tb.Helper()
	base := ledgertest.Store(tb, ledgerConfig)
	c := &cluster{
		replicas: map[string]*replica{"a": newReplica(tb, "a", base), "b": newReplica(tb, "b", base)},
		control:  ledgertest.Replica(tb, base, ledgerConfig),
	}
	for _, r := range c.replicas {
		require.NoError(tb, r.start())
	}
	proxy, err := devcluster.NewLink(c.replicas["a"].addr)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = proxy.Close() })
	c.proxy = proxy
	return c
}

// replica is one in-process ledgerd on a loopback TCP port that stays the
// same across restarts, so that clients given its address find it again.
// Each start serves a fresh Store over the shared database, as a restarted
// ledgerd process would have: a stopped server's Store has ended its waits
// for good.
type replica struct {
	tb   testing.TB
	name string
	base ledgertest.Bundle

	// calls counts the ledger RPCs (not health checks) served since the
	// last reset.
	calls atomic.Int64

	mu       sync.Mutex
	addr     string // "" until the first start
	srv      *server.Server
	served   chan error
	lameDuck bool
	stopped  chan struct{} // closed by stop; replaced by start
}

func newReplica(tb testing.TB, name string, base ledgertest.Bundle) *replica {
	tb.Helper()
	stopped := make(chan struct{})
	close(stopped)
	return &replica{tb: tb, name: name, base: base, stopped: stopped}
}

// countCalls counts every ledger RPC the replica serves.
func (r *replica) countCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/ledger.v1.") {
		r.calls.Add(1)
	}
	return handler(ctx, req)
}

// start serves the replica, on its address of the first start; it does
// nothing if the replica serves already.
func (r *replica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return nil
	}
	store := ledgertest.Replica(r.tb, r.base, ledgerConfig).Store
	// Cleanups run last in first out: the server stops before its store.
	r.tb.Cleanup(r.stop)
	srv, err := server.New(store, server.Config{
		Logger:        slog.New(slog.DiscardHandler),
		ServerOptions: []grpc.ServerOption{grpc.ChainUnaryInterceptor(r.countCalls)},
	})
	if err != nil {
		return fmt.Errorf("replica %s: %w", r.name, err)
	}
	lis, err := r.listen()
	if err != nil {
		return err
	}
	r.addr = lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	r.srv, r.served, r.lameDuck, r.stopped = srv, served, false, make(chan struct{})
	return nil
}

// listen listens on the replica's address, retrying for a while if the port
// is still taken by the connections of the replica's previous run.
func (r *replica) listen() (net.Listener, error) {
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			if err != nil {
				return nil, fmt.Errorf("replica %s: listen on %s: %w", r.name, addr, err)
			}
			return lis, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop shuts the replica down gracefully, as ledgerd does on SIGTERM
// (NOT_SERVING, in-flight calls finish, new ones are refused); it does
// nothing if the replica is stopped.
func (r *replica) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.srv.Shutdown(ctx)
	if err := <-r.served; err != nil {
		r.tb.Errorf("replica %s: serve: %v", r.name, err)
	}
	r.srv = nil
	close(r.stopped)
}

// setServing turns the replica's health NOT_SERVING (a lame duck: it goes on
// answering calls, as a draining ledgerd does) or SERVING again. A lame
// duck never serves again, so SERVING replaces it with a fresh replica on
// the same address (a stopped replica is started).
func (r *replica) setServing(serving bool) error {
	r.mu.Lock()
	lameDuck, running := r.lameDuck, r.srv != nil
	if !serving {
		if !running {
			r.mu.Unlock()
			return fmt.Errorf("replica %s is stopped", r.name)
		}
		r.srv.LameDuck()
		r.lameDuck = true
	}
	r.mu.Unlock()
	if serving && (lameDuck || !running) {
		r.stop()
		return r.start()
	}
	return nil
}

// isStopped returns a channel that is closed once the replica is stopped.
func (r *replica) isStopped() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}
