package ledger

import "github.com/jackc/pgx/v5"

// QueryText exposes the embedded statements to the external tests (query
// plans).
var QueryText = query

// TakeBatchSlots takes every batch slot, as that many running batches
// would, until release is called.
func (s *Store) TakeBatchSlots() (release func()) {
	for range cap(s.batchSlots) {
		s.batchSlots <- struct{}{}
	}
	return func() {
		for range cap(s.batchSlots) {
			<-s.batchSlots
		}
	}
}

// DirectScans maps each statement of the hot path to the columns its row
// type scans directly (scan.go): the result must have exactly these, or
// the rows go through pgx's slower mapping by name.
var DirectScans = map[string]func() []string{
	"reserve_insert":       directColumns[reserveRow],
	"reserve_insert_batch": directColumns[numberedReserveRow],
	"reserve_takeover":     directColumns[entryRow],
	"reserve_extend":       directColumns[entryRow],
	"reserve_exhaust":      directColumns[entryRow],
	"complete":             directColumns[guardRow],
	"complete_batch":       directColumns[numberedGuardRow],
	"fail":                 directColumns[guardRow],
	"release":              directColumns[guardRow],
	"force_release":        directColumns[guardRow],
	"lookup":               directColumns[entryRow],
	"lookup_batch":         directColumns[numberedEntryRow],
}

// CollectDirect reads rows the way queryRows does, into a row type that
// scans directly (an entry's columns).
func CollectDirect(rows pgx.Rows) ([]Entry, error) {
	found, err := collectRows[entryRow](rows)
	entries := make([]Entry, len(found))
	for i := range found {
		entries[i] = found[i].toEntry()
	}
	return entries, err
}

// AdminEventKinds exposes the kinds ListEvents reads through the partial
// index of admin events.
var AdminEventKinds = adminEventKinds
