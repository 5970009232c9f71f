package ledger

import (
	"context"
	"fmt"
	"time"
)

// Lookup returns the whole entry of a key. A key that retention removed is
// reported with StatePurged and PurgedAt, as long as its purged event is
// kept. It fails with a *ValidationError, ErrNotFound or ErrUnavailable.
func (s *Store) Lookup(ctx context.Context, namespace, key string) (Entry, error) {
	entry, err := s.lookup(ctx, namespace, key)
	if err != nil {
		return Entry{}, fmt.Errorf("lookup %s/%s: %w", namespace, key, err)
	}
	return entry, nil
}

func (s *Store) lookup(ctx context.Context, namespace, key string) (Entry, error) {
	if err := checkKey(s.limits, namespace, key); err != nil {
		return Entry{}, err
	}
	row, err := s.readEntry(ctx, lookupItem{namespace: namespace, key: key})
	if err != nil {
		return Entry{}, err
	}
	if row != nil {
		return row.toEntry(), nil
	}
	purged, err := purgedOne(ctx, s.pool, namespace, key)
	if err != nil {
		return Entry{}, err
	}
	if purged == nil {
		return Entry{}, ErrNotFound
	}
	return purged.entry(namespace, key), nil
}

// lookupItem is the key of one Lookup.
type lookupItem struct{ namespace, key string }

func (it lookupItem) id() string { return it.namespace + "\x00" + it.key }

// readEntry reads the entry of a Lookup, or nil when the key has none:
// gathered with concurrent Lookups into one read when coalescing is on
// (see coalesce.go), alone otherwise.
func (s *Store) readEntry(ctx context.Context, item lookupItem) (*entryRow, error) {
	if s.coalesce != nil {
		return s.coalesce.lookups.do(ctx, item)
	}
	return lookupOne(ctx, s.pool, item)
}

// lookupOne reads one entry (lookup.sql), or nil when the key has none.
func lookupOne(ctx context.Context, q querier, item lookupItem) (*entryRow, error) {
	return queryOne[entryRow](ctx, q, query("lookup"), item.namespace, item.key)
}

// lookupMany reads the entries of many distinct keys with one statement
// (lookup_batch.sql, the twin of lookup.sql): each item's row, nil when the
// key has none.
func lookupMany(ctx context.Context, q querier, items []lookupItem) ([]*entryRow, error) {
	namespaces := make([]string, len(items))
	keys := make([]string, len(items))
	for i, it := range items {
		namespaces[i], keys[i] = it.namespace, it.key
	}
	return queryNumbered[numberedEntryRow, entryRow](ctx, q, len(items), query("lookup_batch"), namespaces, keys)
}

// purgedRow is the purged event of a key without an entry (see
// lookup_purged.sql).
type purgedRow struct {
	At           time.Time `db:"at"`
	FencingToken int64     `db:"fencing_token"`
	Owner        string    `db:"owner"`
	Attempt      int32     `db:"attempt"`
}

// entry is what Lookup reports of a purged key.
func (p purgedRow) entry(namespace, key string) Entry {
	return Entry{
		Namespace:    namespace,
		Key:          key,
		State:        StatePurged,
		Owner:        p.Owner,
		FencingToken: p.FencingToken,
		Attempts:     int(p.Attempt),
		PurgedAt:     p.At,
	}
}

// purgedOne reads the purged event of a key without an entry
// (lookup_purged.sql), or nil when it has none.
func purgedOne(ctx context.Context, q querier, namespace, key string) (*purgedRow, error) {
	return queryOne[purgedRow](ctx, q, query("lookup_purged"), namespace, key)
}

// purgedMany reads the purged events of many keys of a namespace with one
// statement (lookup_purged_batch.sql, the twin of lookup_purged.sql): each
// key's, nil when it has none.
func purgedMany(ctx context.Context, q querier, namespace string, keys []string) ([]*purgedRow, error) {
	return queryNumbered[numberedPurgedRow, purgedRow](ctx, q, len(keys), query("lookup_purged_batch"), namespace, keys)
}

// numberedPurgedRow is a row of lookup_purged_batch.sql.
type numberedPurgedRow struct {
	N int `db:"n"`
	purgedRow
}

func (r *numberedPurgedRow) item() (int, *purgedRow) { return r.N, &r.purgedRow }
