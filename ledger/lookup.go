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
	found, err := queryRows[entryRow](ctx, s.pool, query("lookup"), namespace, key)
	if err != nil {
		return Entry{}, err
	}
	if len(found) > 0 {
		return found[0].toEntry(), nil
	}
	purged, err := queryRows[purgedRow](ctx, s.pool, query("lookup_purged"), namespace, key)
	if err != nil {
		return Entry{}, err
	}
	if len(purged) == 0 {
		return Entry{}, ErrNotFound
	}
	return purged[0].entry(namespace, key), nil
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
