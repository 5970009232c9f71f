package ledger

import (
	"context"
	"fmt"
	"time"
)

// SweeperCaller is the identity the sweeper's purged events record.
const SweeperCaller = "ledgerd-sweeper"

// eventDeleteBatchSize bounds the events one retention statement deletes.
const eventDeleteBatchSize = 1000

// SweepReport is what one pass of the sweeper did.
type SweepReport struct {
	// PurgedEntries counts the entries removed by retention, by namespace.
	PurgedEntries map[string]int64
	// DeletedEvents counts the audit events removed by event retention, by
	// namespace ("" for the platform's events).
	DeletedEvents map[string]int64
	// Err is the error that ended the pass early, if any.
	Err error
}

// Sweep runs one pass of retention: it removes the completed and failed
// entries whose retention has elapsed (writing a purged event for each),
// then the audit events older than their namespace's event retention, in
// small batches that hold their locks briefly. Several sweepers (one per
// replica) may run at once: they skip the rows another one has locked, so
// they neither wait on each other nor delete anything twice.
//
// Event retention is never shorter than Limits.MinEventRetention nor than
// the namespace's retention, whatever the namespace's stored setting; the
// events that record admin actions, and the platform's events (empty
// namespace), are kept for Config.AdminEventRetention at least.
func (s *Store) Sweep(ctx context.Context) SweepReport {
	ctx = WithCaller(ctx, SweeperCaller)
	purged, err := s.purgeExpired(ctx, "", "")
	report := SweepReport{PurgedEntries: purged, DeletedEvents: map[string]int64{}}
	if err != nil {
		report.Err = fmt.Errorf("sweep entries: %w", err)
		return report
	}
	type retentionRow struct {
		Name                  string `db:"name"`
		EventRetentionMS      int64  `db:"event_retention_ms"`
		AdminEventRetentionMS int64  `db:"admin_event_retention_ms"`
	}
	namespaces, err := queryRows[retentionRow](ctx, s.pool, query("namespaces_event_retention"),
		s.limits.MinEventRetention.Milliseconds(), s.adminEventRetention.Milliseconds())
	if err != nil {
		report.Err = fmt.Errorf("sweep events: %w", err)
		return report
	}
	for _, ns := range namespaces {
		for {
			tag, err := s.pool.Exec(ctx, query("delete_events"), ns.Name, eventDeleteBatchSize, ns.EventRetentionMS, ns.AdminEventRetentionMS)
			if err != nil {
				report.Err = fmt.Errorf("sweep events of %q: %w", ns.Name, dbError(err))
				return report
			}
			if deleted := tag.RowsAffected(); deleted > 0 {
				report.DeletedEvents[ns.Name] += deleted
			}
			// Each of the statement's two parts deletes at most a batch: a
			// short count means both are done (or one more pass finds
			// nothing).
			if tag.RowsAffected() < eventDeleteBatchSize {
				break
			}
		}
	}
	return report
}

// RunSweeper runs Sweep now and then every interval until ctx ends, passing
// each pass's report to report (for logs and metrics); it then returns nil.
// A failed pass is reported and retried at the next interval.
func (s *Store) RunSweeper(ctx context.Context, every time.Duration, report func(SweepReport)) error {
	if every <= 0 {
		return fmt.Errorf("sweeper interval must be positive, got %s", every)
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		result := s.Sweep(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if report != nil {
			report(result)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
