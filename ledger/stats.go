package ledger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// LeaseCount is the number of leased entries of a namespace, by the
// database's clock.
type LeaseCount struct {
	// Held counts the leases that have not run out.
	Held int64
	// Expired counts the leases that ran out and have not been taken over
	// yet: work that a crashed or stuck worker left behind.
	Expired int64
}

// LeaseCounts returns the leases of every namespace, zeros included. It
// scans the entries table (no index covers the state, to keep updates HOT),
// so call it seldom — a metrics collector caches it for several seconds —
// and bound it with ctx.
func (s *Store) LeaseCounts(ctx context.Context) (map[string]LeaseCount, error) {
	type leaseRow struct {
		Namespace string `db:"namespace"`
		Held      int64  `db:"held"`
		Expired   int64  `db:"expired"`
	}
	rows, err := queryRows[leaseRow](ctx, s.pool, query("lease_counts"))
	if err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	counts := make(map[string]LeaseCount, len(rows))
	for _, r := range rows {
		counts[r.Namespace] = LeaseCount{Held: r.Held, Expired: r.Expired}
	}
	return counts, nil
}

// PoolStat returns a snapshot of the database pool's statistics
// (connections in use, idle, acquisitions and their waits).
func (s *Store) PoolStat() *pgxpool.Stat { return s.pool.Stat() }
