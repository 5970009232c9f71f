package server

import (
	"log/slog"
	"maps"
	"slices"

	"github.com/ledgerd/ledgerd/ledger"
)

// SweepReporter returns what the retention sweeper hands each pass's report
// to (ledger.Store.RunSweeper): metrics (nil: none) record it, and logger
// says who lost what, one line per namespace that lost entries or events
// ("swept", with namespace, purged_entries and deleted_events; the
// platform's events have an empty namespace), and a warning for a failed
// pass. Idle passes stay quiet.
func SweepReporter(metrics *Metrics, logger *slog.Logger) func(ledger.SweepReport) {
	return func(r ledger.SweepReport) {
		if metrics != nil {
			metrics.ObserveSweep(r)
		}
		namespaces := slices.Sorted(maps.Keys(r.PurgedEntries))
		for namespace := range r.DeletedEvents {
			if _, purged := r.PurgedEntries[namespace]; !purged {
				namespaces = append(namespaces, namespace)
			}
		}
		slices.Sort(namespaces)
		for _, namespace := range namespaces {
			purged, deleted := r.PurgedEntries[namespace], r.DeletedEvents[namespace]
			if purged > 0 || deleted > 0 {
				logger.Info("swept", "namespace", namespace, "purged_entries", purged, "deleted_events", deleted)
			}
		}
		if r.Err != nil {
			logger.Warn("sweep failed", "error", r.Err)
		}
	}
}
