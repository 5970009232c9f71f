package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrAlreadyExists means CreateNamespace found the namespace there already.
var ErrAlreadyExists = errors.New("already exists")

// Namespace is a namespace and its settings.
type Namespace struct {
	Name      string
	Settings  NamespaceSettings
	CreatedAt time.Time
	UpdatedAt time.Time
}

func (r namespaceRow) namespace() Namespace {
	return Namespace{Name: r.Name, Settings: r.settings(), CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// NamespaceUpdate is a change of settings: nil fields are kept (or take the
// server's defaults on creation).
type NamespaceUpdate struct {
	DefaultLeaseTTL *time.Duration
	MaxLeaseTTL     *time.Duration
	MaxResultBytes  *int
	Retention       *time.Duration
	MaxAttempts     *int
	EventRetention  *time.Duration
	MaxHeldLeases   *int64
	MaxStoredBytes  *int64
}

// The request fields of the platform-owned settings: the limits and quotas
// that bound what one namespace takes of the shared service. Only a
// platform admin sets them; a namespace's admin tunes the other settings
// within them.
const (
	FieldMaxLeaseTTL    = "settings.max_lease_ttl"
	FieldMaxResultBytes = "settings.max_result_bytes"
	FieldMaxHeldLeases  = "settings.max_held_leases"
	FieldMaxStoredBytes = "settings.max_stored_bytes"
)

// PlatformFields returns the request fields of the platform-owned settings
// that u sets (FieldMaxLeaseTTL and the others), in the order of the API;
// none for an update of tenant-tunable settings only (default_lease_ttl,
// retention, max_attempts, event_retention). A caller that is not a
// platform admin may not send an update that sets any of them, even to the
// value the namespace has: the request says it wants to own the limit.
func (u NamespaceUpdate) PlatformFields() []string {
	var fields []string
	for _, f := range []struct {
		set   bool
		field string
	}{
		{u.MaxLeaseTTL != nil, FieldMaxLeaseTTL},
		{u.MaxResultBytes != nil, FieldMaxResultBytes},
		{u.MaxHeldLeases != nil, FieldMaxHeldLeases},
		{u.MaxStoredBytes != nil, FieldMaxStoredBytes},
	} {
		if f.set {
			fields = append(fields, f.field)
		}
	}
	return fields
}

func (u NamespaceUpdate) applyTo(n NamespaceSettings) NamespaceSettings {
	apply := func(field *time.Duration, value *time.Duration) {
		if value != nil {
			*field = *value
		}
	}
	apply(&n.DefaultLeaseTTL, u.DefaultLeaseTTL)
	apply(&n.MaxLeaseTTL, u.MaxLeaseTTL)
	apply(&n.Retention, u.Retention)
	apply(&n.EventRetention, u.EventRetention)
	if u.MaxResultBytes != nil {
		n.MaxResultBytes = *u.MaxResultBytes
	}
	if u.MaxAttempts != nil {
		n.MaxAttempts = *u.MaxAttempts
	}
	if u.MaxHeldLeases != nil {
		n.MaxHeldLeases = *u.MaxHeldLeases
	}
	if u.MaxStoredBytes != nil {
		n.MaxStoredBytes = *u.MaxStoredBytes
	}
	return n
}

// checkSettings bounds a namespace's settings, naming the request field.
func checkSettings(l Limits, n NamespaceSettings) error {
	switch {
	case n.DefaultLeaseTTL < l.MinLeaseTTL:
		return invalid("settings.default_lease_ttl", "must be at least %s (the minimum lease TTL), got %s", l.MinLeaseTTL, n.DefaultLeaseTTL)
	case n.MaxLeaseTTL < n.DefaultLeaseTTL:
		return invalid("settings.max_lease_ttl", "must be at least default_lease_ttl %s, got %s", n.DefaultLeaseTTL, n.MaxLeaseTTL)
	case n.MaxResultBytes < 0 || n.MaxResultBytes > l.MaxResultBytes:
		return invalid("settings.max_result_bytes", "must be between 0 and %d, got %d", l.MaxResultBytes, n.MaxResultBytes)
	case n.Retention <= 0 || n.Retention > l.MaxRetention:
		return invalid("settings.retention", "must be positive and at most %s (the server's ceiling), got %s", l.MaxRetention, n.Retention)
	case n.MaxAttempts < 0 || n.MaxAttempts > math.MaxInt32: // stored as integer
		return invalid("settings.max_attempts", "must be between 0 and %d, got %d", math.MaxInt32, n.MaxAttempts)
	case n.EventRetention < l.MinEventRetention || n.EventRetention > l.MaxEventRetention:
		return invalid("settings.event_retention", "must be between %s (the server's floor) and %s (its ceiling), got %s",
			l.MinEventRetention, l.MaxEventRetention, n.EventRetention)
	case n.EventRetention < n.Retention:
		// The purged event of a key is what its next fencing token
		// continues from: without it, the tokens start again at 1.
		return invalid("settings.event_retention", "must be at least retention %s, got %s", n.Retention, n.EventRetention)
	case n.MaxHeldLeases < 0:
		return invalid("settings.max_held_leases", "must be 0 (no quota) or more, got %d", n.MaxHeldLeases)
	case n.MaxStoredBytes < 0:
		return invalid("settings.max_stored_bytes", "must be 0 (no quota) or more, got %d", n.MaxStoredBytes)
	}
	return nil
}

// ListNamespaces returns a page of namespaces by name, and the token of the
// next page. It fails with a *ValidationError or ErrUnavailable.
func (s *Store) ListNamespaces(ctx context.Context, page Page) ([]Namespace, string, error) {
	size, token, err := page.decode()
	if err != nil {
		return nil, "", fmt.Errorf("list namespaces: %w", err)
	}
	rows, err := queryRows[namespaceRow](ctx, s.pool, query("namespace_list"), token.Key, size+1)
	if err != nil {
		return nil, "", fmt.Errorf("list namespaces: %w", err)
	}
	namespaces := make([]Namespace, 0, min(len(rows), size))
	for _, row := range rows[:min(len(rows), size)] {
		namespaces = append(namespaces, row.namespace())
	}
	if len(rows) > size {
		return namespaces, pageToken{Key: namespaces[size-1].Name}.encode(), nil
	}
	return namespaces, "", nil
}

// GetNamespace returns a namespace's settings. It fails with a
// *ValidationError, ErrNotFound or ErrUnavailable.
func (s *Store) GetNamespace(ctx context.Context, name string) (Namespace, error) {
	if err := checkNamespace(name); err != nil {
		return Namespace{}, fmt.Errorf("get namespace %s: %w", name, err)
	}
	rows, err := queryRows[namespaceRow](ctx, s.pool, query("namespace_get"), name)
	if err != nil {
		return Namespace{}, fmt.Errorf("get namespace %s: %w", name, err)
	}
	if len(rows) == 0 {
		return Namespace{}, fmt.Errorf("get namespace %s: %w", name, ErrNotFound)
	}
	return rows[0].namespace(), nil
}

// CreateNamespace creates a namespace with the server's default settings
// changed by update, and records who did it and why. It fails with a
// *ValidationError, ErrAlreadyExists, a *QuotaError (the caller's binding
// pattern covers Config.MaxNamespacesPerPattern namespaces already, see
// WithCreatorPatterns) or ErrUnavailable.
func (s *Store) CreateNamespace(ctx context.Context, name string, update NamespaceUpdate, reason string) (Namespace, error) {
	settings := update.applyTo(s.defaults)
	err := checkNamespace(name)
	if err == nil {
		err = checkSettings(s.limits, settings)
	}
	if err == nil {
		err = checkReason(s.limits, reason)
	}
	if err != nil {
		return Namespace{}, fmt.Errorf("create namespace %s: %w", name, err)
	}
	args := append(append([]any{name}, settingsArgs(settings)...), reason, callerFrom(ctx))
	var rows []namespaceRow
	if patterns := s.cappedPatterns(ctx); len(patterns) > 0 {
		rows, err = withinPatternCap(ctx, s, name, patterns, func(tx pgx.Tx) ([]namespaceRow, error) {
			return queryRows[namespaceRow](ctx, tx, query("namespace_create"), args...)
		})
	} else {
		rows, err = queryRows[namespaceRow](ctx, s.pool, query("namespace_create"), args...)
	}
	if err != nil {
		return Namespace{}, fmt.Errorf("create namespace %s: %w", name, err)
	}
	if len(rows) == 0 {
		return Namespace{}, fmt.Errorf("create namespace %s: %w", name, ErrAlreadyExists)
	}
	s.namespaces.put(name, rows[0].settings())
	return rows[0].namespace(), nil
}

// UpdateNamespace changes the settings that update sets, keeps the others,
// and records who did it, why, and the settings before. This replica uses
// the new settings at once; the others within their namespace cache time.
// It fails with a *ValidationError, ErrNotFound or ErrUnavailable.
func (s *Store) UpdateNamespace(ctx context.Context, name string, update NamespaceUpdate, reason string) (Namespace, error) {
	namespace, err := s.updateNamespace(ctx, name, update, reason)
	if err != nil {
		return Namespace{}, fmt.Errorf("update namespace %s: %w", name, err)
	}
	s.namespaces.put(name, namespace.Settings)
	return namespace, nil
}

func (s *Store) updateNamespace(ctx context.Context, name string, update NamespaceUpdate, reason string) (Namespace, error) {
	if err := checkNamespace(name); err != nil {
		return Namespace{}, err
	}
	if err := checkReason(s.limits, reason); err != nil {
		return Namespace{}, err
	}
	var updated Namespace
	// Read, check and write in one transaction, the row locked, so that two
	// concurrent partial updates both apply.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, query("namespace_get")+" FOR UPDATE", name)
		if err != nil {
			return err
		}
		current, err := pgx.CollectRows(rows, pgx.RowToStructByName[namespaceRow])
		if err != nil {
			return err
		}
		if len(current) == 0 {
			return ErrNotFound
		}
		settings := update.applyTo(current[0].settings())
		if err := checkSettings(s.limits, settings); err != nil {
			return err
		}
		args := append(append([]any{name}, settingsArgs(settings)...), reason, callerFrom(ctx))
		rows, err = tx.Query(ctx, query("namespace_update"), args...)
		if err != nil {
			return err
		}
		written, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[namespaceRow])
		if err != nil {
			return err
		}
		updated = written.namespace()
		return trackStoredBytes(ctx, tx, name, current[0].MaxStoredBytes, settings.MaxStoredBytes)
	})
	return updated, dbError(err)
}
