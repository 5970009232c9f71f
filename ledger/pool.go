package ledger

import (
	"context"
	"errors"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConfigurePool prepares the configuration of a Store's pool for a
// database that fails over (docs/operations.md, "High availability"):
//
//   - A new connection must land on a writable primary: unless the URL
//     sets target_session_attrs, it is read-write, so that with a
//     multi-host URL each connection tries the hosts in order until one
//     accepts writes.
//   - A connection to a server that has become read-only is dropped
//     instead of being handed out again: a hot standby
//     (in_hot_standby on) or a server refusing writes by default
//     (default_transaction_read_only on), as a demoted primary or one being
//     switched over may be. The write it refused (SQLSTATE 25006) answers
//     ErrUnavailable, and the caller's retry gets a new connection.
//
// The server reports both parameters to every session as they change
// (PostgreSQL 14 and later); on older servers only target_session_attrs
// applies.
//
//   - No cancel request is ever sent. When a call's context ends in the
//     middle of a statement, pgx closes the connection and, by default,
//     first sends PostgreSQL a cancel request for the statement. A COMMIT
//     waiting for the synchronous standby that is canceled so ends as a
//     local commit that the standby never saw (PostgreSQL warns
//     "canceling wait for synchronous replication"), visible at once: a
//     retried Complete would read it and be acknowledged, and a failover
//     would then lose an acknowledged Complete. The pool's connections
//     refuse to dial cancel requests; the connection is only closed, and
//     the COMMIT goes on waiting for the standby (or for the primary's
//     demotion), while the caller's retry waits for the key's row lock.
//
// Options add to that (see WithTracerProvider).
func ConfigurePool(config *pgxpool.Config, options ...PoolOption) {
	for _, option := range options {
		option(config)
	}
	dial := config.ConnConfig.DialFunc
	config.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network == noCancelNetwork {
			return nil, errCancelRequestRefused
		}
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return noCancelConn{conn}, nil
	}
	if config.ConnConfig.ValidateConnect == nil {
		config.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
	}
	// Checked as a connection is handed out, not as it is returned: the
	// pool runs AfterRelease in a goroutine of its own for every release.
	prepareConn := config.PrepareConn
	config.PrepareConn = func(ctx context.Context, conn *pgx.Conn) (bool, error) {
		if !writable(conn.PgConn()) {
			return false, nil // destroyed; the call takes another connection
		}
		if prepareConn == nil {
			return true, nil
		}
		return prepareConn(ctx, conn)
	}
}

// noCancelNetwork is the network of a noCancelConn's remote address. pgx
// dials a cancel request to the network and address of the connection's
// RemoteAddr, through the same DialFunc: ConfigurePool's refuses it.
const noCancelNetwork = "ledgerd-no-cancel-request"

var errCancelRequestRefused = errors.New("ledgerd never sends cancel requests (see ledger.ConfigurePool)")

// noCancelConn is a connection whose remote address names noCancelNetwork.
type noCancelConn struct{ net.Conn }

func (c noCancelConn) RemoteAddr() net.Addr { return noCancelAddr{c.Conn.RemoteAddr()} }

// noCancelAddr is a remote address in noCancelNetwork; its String is the
// real address.
type noCancelAddr struct{ net.Addr }

func (noCancelAddr) Network() string { return noCancelNetwork }

// writable reports whether the server of a connection still accepts
// writes, by the parameters it reports.
func writable(conn *pgconn.PgConn) bool {
	return conn.ParameterStatus("in_hot_standby") != "on" &&
		conn.ParameterStatus("default_transaction_read_only") != "on"
}
