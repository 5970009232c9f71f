package ledger

import (
	"context"
	"fmt"
)

// Lookup returns the whole entry of a key. It fails with a
// *ValidationError, ErrNotFound or ErrUnavailable.
func (s *Store) Lookup(ctx context.Context, namespace, key string) (Entry, error) {
	if err := checkKey(s.limits, namespace, key); err != nil {
		return Entry{}, fmt.Errorf("lookup %s/%s: %w", namespace, key, err)
	}
	found, err := queryRows[entryRow](ctx, s.pool, query("lookup"), namespace, key)
	if err != nil {
		return Entry{}, fmt.Errorf("lookup %s/%s: %w", namespace, key, err)
	}
	if len(found) == 0 {
		return Entry{}, fmt.Errorf("lookup %s/%s: %w", namespace, key, ErrNotFound)
	}
	return found[0].toEntry(), nil
}
