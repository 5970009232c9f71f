package server

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/ledgerd/ledgerd/ledger"
)

// Limits bound what one client can take of a server: the size of a
// message, the calls in flight on a connection, the metadata of a call,
// and how long connections live and may sit idle. Zero fields take their
// defaults, chosen for ledgerd's traffic: small unary calls, a Reserve that
// may wait up to a minute, and pipelines that keep a connection open for
// hours. (The deadline of every call is capped by Config.MaxTimeout.)
type Limits struct {
	// MaxRecvMsgBytes bounds a request message. Defaults to
	// MaxRequestBytes of the store's limits: the largest request they
	// allow (a Complete with the largest result) with room for its other
	// fields. A larger request is refused with RESOURCE_EXHAUSTED before it
	// is decoded.
	MaxRecvMsgBytes int
	// MaxSendMsgBytes bounds a response message. Defaults to
	// MaxRecvMsgBytes plus 8 MiB: room for a Lookup of the largest result
	// with a page of history, or for a listing page of the default size with
	// the largest checkpoints, metadata and errors. A larger response fails
	// with RESOURCE_EXHAUSTED: ask for a smaller page.
	MaxSendMsgBytes int
	// MaxConcurrentStreams bounds the calls in flight on one connection
	// (waiting Reserves included). A client that has that many waits for
	// one to finish before it starts another: gRPC clients queue the call,
	// they do not fail it. Defaults to 1000.
	MaxConcurrentStreams uint32
	// MaxHeaderListBytes bounds the metadata (headers) of a call. Defaults
	// to 1 MiB, what the HTTP port accepts (net/http's default), so that
	// whatever the HTTP/JSON gateway forwards fits.
	MaxHeaderListBytes uint32
	// KeepaliveMinTime is how often a client may ping at most: a client
	// that pings more often is disconnected (GOAWAY "too_many_pings").
	// Defaults to 10s, so clients may keep connections warm with pings every
	// 10s or more (gRPC's own default, 5m, would disconnect clients that
	// ping every minute).
	KeepaliveMinTime time.Duration
	// RefuseIdlePings disconnects a client that pings while it has no call
	// in flight. Defaults to false: such pings are allowed (no more often
	// than KeepaliveMinTime), so that a pipeline can keep its connection
	// alive between batches through NATs and load balancers.
	RefuseIdlePings bool
	// KeepaliveTime is how long a connection may be silent before the
	// server pings the client to check that it is still there. Defaults to
	// 1m: a vanished client's calls (a waiting Reserve) and connection are
	// let go quickly, and the pings keep middleboxes from dropping a quiet
	// connection.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long the server waits for the answer to its
	// ping before it closes the connection. Defaults to 20s.
	KeepaliveTimeout time.Duration
	// MaxConnectionIdle closes a connection (GOAWAY) that has had no call
	// in flight for this long; the client reconnects on its next call.
	// Defaults to 15m. Negative: idle connections stay open.
	MaxConnectionIdle time.Duration
	// MaxConnectionAge closes a connection gracefully (GOAWAY) after it has
	// lived this long, give or take 10% (gRPC adds the jitter), so that
	// clients reconnect and spread over the replicas, new ones included.
	// Defaults to 30m. Negative: connections live as long as their client
	// wants.
	MaxConnectionAge time.Duration
	// MaxConnectionAgeGrace is how long the calls in flight on a connection
	// that reached MaxConnectionAge may take to finish before it is cut.
	// Defaults to Config.MaxTimeout plus 10s, so that a call with the
	// longest deadline allowed finishes.
	MaxConnectionAgeGrace time.Duration
	// ConnectionTimeout bounds the handshake of a new connection (TLS and
	// the HTTP/2 preface). Defaults to 10s.
	ConnectionTimeout time.Duration
	// RequestReadTimeout bounds the wait for a call's request message
	// once its headers have arrived: gRPC serves every new call on a
	// goroutine that waits for the message before any interceptor (and
	// so before the call's deadline is capped), so a client that never
	// sends it would hold that goroutine. A call whose message has not
	// arrived in time is cancelled. Defaults to 1m: a request of the
	// default maximum size (17 MiB) needs a link of about 2.4 Mbit/s.
	RequestReadTimeout time.Duration
	// MaxPendingRequests bounds the calls, over all connections, that
	// wait for their request message at once; a call beyond it is refused
	// with UNAVAILABLE before it gets a goroutine. A client's message
	// follows its headers at once, so only stalled or hostile clients keep
	// calls in this state. Defaults to 10000.
	MaxPendingRequests int
}

// MaxRequestBytes is the default request size limit for a store with
// these limits: a Complete with the largest result any namespace may
// allow (limits.MaxResultBytes), plus 1 MiB for its other fields, and
// never below gRPC's default of 4 MiB.
func MaxRequestBytes(limits ledger.Limits) int {
	if limits.MaxResultBytes == 0 {
		limits.MaxResultBytes = ledger.DefaultLimits().MaxResultBytes
	}
	return max(4<<20, limits.MaxResultBytes+1<<20)
}

// withDefaults fills in the zero fields; store is what the requests are
// sized from, maxTimeout the cap on a call's deadline.
func (l Limits) withDefaults(store ledger.Limits, maxTimeout time.Duration) Limits {
	setDefault(&l.MaxRecvMsgBytes, MaxRequestBytes(store))
	setDefault(&l.MaxSendMsgBytes, l.MaxRecvMsgBytes+8<<20)
	setDefault(&l.MaxConcurrentStreams, 1000)
	setDefault(&l.MaxHeaderListBytes, 1<<20)
	setDefault(&l.KeepaliveMinTime, 10*time.Second)
	setDefault(&l.KeepaliveTime, time.Minute)
	setDefault(&l.KeepaliveTimeout, 20*time.Second)
	setDefault(&l.MaxConnectionIdle, 15*time.Minute)
	setDefault(&l.MaxConnectionAge, 30*time.Minute)
	setDefault(&l.MaxConnectionAgeGrace, maxTimeout+10*time.Second)
	setDefault(&l.ConnectionTimeout, 10*time.Second)
	setDefault(&l.RequestReadTimeout, time.Minute)
	setDefault(&l.MaxPendingRequests, 10000)
	return l
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// validate reports a limit that cannot work; l has its defaults.
func (l Limits) validate() error {
	switch {
	case l.MaxRecvMsgBytes < 0 || l.MaxSendMsgBytes < 0:
		return fmt.Errorf("server limits: message sizes must be positive, got %d (receive) and %d (send)", l.MaxRecvMsgBytes, l.MaxSendMsgBytes)
	case l.KeepaliveMinTime < 0, l.KeepaliveTime < time.Second, l.KeepaliveTimeout < 0,
		l.MaxConnectionAgeGrace < 0, l.ConnectionTimeout < 0, l.RequestReadTimeout < 0:
		return fmt.Errorf("server limits: keepalive, connection and request read times must be positive (KeepaliveTime at least 1s)")
	case l.MaxPendingRequests < 0:
		return fmt.Errorf("server limits: MaxPendingRequests must be positive, got %d", l.MaxPendingRequests)
	}
	return nil
}

// streamWorkers is the number of goroutines that serve calls (see
// serverOptions).
const streamWorkers = 64

// The flow-control windows a client may fill before ledgerd reads: 1 MiB
// per call (a batch of a thousand keys in one window) and 4 MiB per
// connection. Fixed windows turn off grpc-go's bandwidth-delay estimator,
// which otherwise sends a PING with the first data frame after each
// acknowledgement: at low load one more frame each way, and a wake-up of
// the connection's reader, for every call.
const (
	streamWindowBytes     = 1 << 20
	connectionWindowBytes = 4 << 20
)

// serverOptions are the grpc.ServerOptions that enforce l.
func (l Limits) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(l.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(l.MaxSendMsgBytes),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.StaticStreamWindowSize(streamWindowBytes),
		grpc.StaticConnWindowSize(connectionWindowBytes),
		// Serve calls on reused goroutines, whose stacks have grown already,
		// rather than a new one per call: growing a fresh stack through the
		// interceptors, the ledger and pgx was a tenth of ledgerd's CPU
		// (measured with pprof under ledgerbench). Calls beyond the workers
		// still get goroutines of their own, so a waiting Reserve blocks
		// nobody. (grpc-go marks the option experimental.)
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxHeaderListSize(l.MaxHeaderListBytes),
		grpc.ConnectionTimeout(l.ConnectionTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             l.KeepaliveMinTime,
			PermitWithoutStream: !l.RefuseIdlePings,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     positiveOrZero(l.MaxConnectionIdle), // zero: gRPC's infinity
			MaxConnectionAge:      positiveOrZero(l.MaxConnectionAge),
			MaxConnectionAgeGrace: l.MaxConnectionAgeGrace,
			Time:                  l.KeepaliveTime,
			Timeout:               l.KeepaliveTimeout,
		}),
	}
}

func positiveOrZero(d time.Duration) time.Duration { return max(d, 0) }
