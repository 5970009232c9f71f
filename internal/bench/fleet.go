package bench

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// A fleet is what one ledgerd side calls: the ledgerd processes the run
// started for it (none when measuring --addr), the clients of its
// connections, and the database those processes serve over. The ledgerd
// side has one, and a --secure run a second one, with a database of its
// own.
type fleet struct {
	side     string
	replicas []*replica
	// clients and health hold, for each ledgerd, the clients of its
	// connections: the ledger service, and the health service whose Check
	// is the floor workload.
	clients [][]ledgerv1.LedgerServiceClient
	health  [][]healthpb.HealthClient
	// pool is the database the fleet's ledgerd serve over; nil with --addr
	// and no --database-url.
	pool *pgxpool.Pool
	// readKeys are the completed keys of its database that replay and
	// lookup draw from; none until they are made (or prefilled).
	readKeys keySet
	// options dial its ledgerd: more connections (--idle-waiters) are
	// made alike.
	options []grpc.DialOption
}

// dial opens cfg.GRPCConns connections, with options, to each ledgerd of
// addrs, and returns the fleet of side that calls them.
func (r *runner) dial(side string, addrs []string, options ...grpc.DialOption) (*fleet, error) {
	f := &fleet{side: side, options: options}
	for _, addr := range addrs {
		var clients []ledgerv1.LedgerServiceClient
		var health []healthpb.HealthClient
		for range r.cfg.GRPCConns {
			conn, err := grpc.NewClient(addr, options...)
			if err != nil {
				return nil, fmt.Errorf("connect to ledgerd at %s: %w", addr, err)
			}
			r.conns = append(r.conns, conn)
			clients = append(clients, ledgerv1.NewLedgerServiceClient(conn))
			health = append(health, healthpb.NewHealthClient(conn))
		}
		f.clients = append(f.clients, clients)
		f.health = append(f.health, health)
	}
	return f, nil
}

// addrs returns the gRPC addresses of the fleet's started processes.
func addrsOf(replicas []*replica) []string {
	addrs := make([]string, len(replicas))
	for i, rep := range replicas {
		addrs[i] = rep.ledgerd.Addr()
	}
	return addrs
}
