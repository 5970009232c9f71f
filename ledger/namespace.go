package ledger

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// NamespaceSettings are a namespace's policies. Zero fields take their
// defaults.
type NamespaceSettings struct {
	// DefaultLeaseTTL is the lease given when a request asks for none.
	// Defaults to 30s.
	DefaultLeaseTTL time.Duration
	// MaxLeaseTTL is the longest lease a request may ask for. Defaults to 1h.
	MaxLeaseTTL time.Duration
	// MaxResultBytes bounds a Complete's result. Defaults to 1 MiB.
	MaxResultBytes int
	// Retention is how long a completed or failed entry is kept (its
	// expires_at). Defaults to 7 days.
	Retention time.Duration
	// MaxAttempts turns a retryable failure permanent once the key has had
	// this many grants. Defaults to 0: no limit.
	MaxAttempts int
	// EventRetention is how long audit events are kept: at least Retention
	// (a purged key's fencing tokens continue from its purged event) and
	// within Limits.MinEventRetention and Limits.MaxEventRetention. The
	// events that record admin actions are kept longer (see
	// Config.AdminEventRetention). Defaults to 30 days.
	EventRetention time.Duration
	// MaxHeldLeases bounds the unexpired leases the namespace holds at once:
	// a grant beyond it fails with a *QuotaError. Defaults to 0: no quota.
	MaxHeldLeases int64
	// MaxStoredBytes bounds the bytes the namespace's entries store: for
	// each entry, the bytes of every field a caller writes into it and the
	// entry keeps until a reset or a purge (key, owner, fingerprint, label
	// keys and values, checkpoint, result, error code and message; audit
	// events are not counted). A Reserve, Heartbeat, Complete or Fail that
	// would grow the sum beyond it fails with a *QuotaError and changes
	// nothing; a write that does not grow it is never refused. Defaults to
	// 0: no quota.
	MaxStoredBytes int64
}

// DefaultNamespaceSettings returns the settings used for zero fields.
func DefaultNamespaceSettings() NamespaceSettings {
	return NamespaceSettings{
		DefaultLeaseTTL: 30 * time.Second,
		MaxLeaseTTL:     time.Hour,
		MaxResultBytes:  1 << 20,
		Retention:       7 * 24 * time.Hour,
		EventRetention:  30 * 24 * time.Hour,
	}
}

func (n NamespaceSettings) withDefaults() NamespaceSettings {
	d := DefaultNamespaceSettings()
	setDefault(&n.DefaultLeaseTTL, d.DefaultLeaseTTL)
	setDefault(&n.MaxLeaseTTL, d.MaxLeaseTTL)
	setDefault(&n.MaxResultBytes, d.MaxResultBytes)
	setDefault(&n.Retention, d.Retention)
	setDefault(&n.EventRetention, d.EventRetention)
	return n
}

func (n NamespaceSettings) validate(l Limits) error {
	switch {
	case n.DefaultLeaseTTL < l.MinLeaseTTL:
		return fmt.Errorf("DefaultLeaseTTL %s is below the minimum lease TTL %s", n.DefaultLeaseTTL, l.MinLeaseTTL)
	case n.MaxLeaseTTL < n.DefaultLeaseTTL:
		return fmt.Errorf("MaxLeaseTTL %s is below DefaultLeaseTTL %s", n.MaxLeaseTTL, n.DefaultLeaseTTL)
	case n.MaxResultBytes < 0:
		return fmt.Errorf("MaxResultBytes must not be negative, got %d", n.MaxResultBytes)
	case n.MaxResultBytes > l.MaxResultBytes:
		return fmt.Errorf("MaxResultBytes %d is above the server's ceiling %d", n.MaxResultBytes, l.MaxResultBytes)
	case n.Retention <= 0:
		return fmt.Errorf("NamespaceSettings.Retention must be positive, got %s", n.Retention)
	case n.Retention > l.MaxRetention:
		return fmt.Errorf("NamespaceSettings.Retention %s is above the server's ceiling %s", n.Retention, l.MaxRetention)
	case n.MaxAttempts < 0:
		return fmt.Errorf("MaxAttempts must not be negative, got %d", n.MaxAttempts)
	case n.EventRetention < l.MinEventRetention:
		return fmt.Errorf("EventRetention %s is below the server's floor %s", n.EventRetention, l.MinEventRetention)
	case n.EventRetention > l.MaxEventRetention:
		return fmt.Errorf("EventRetention %s is above the server's ceiling %s", n.EventRetention, l.MaxEventRetention)
	case n.EventRetention < n.Retention:
		return fmt.Errorf("EventRetention %s is below Retention %s: a purged key's fencing tokens would start again at 1", n.EventRetention, n.Retention)
	case n.MaxHeldLeases < 0:
		return fmt.Errorf("MaxHeldLeases must not be negative, got %d", n.MaxHeldLeases)
	case n.MaxStoredBytes < 0:
		return fmt.Errorf("MaxStoredBytes must not be negative, got %d", n.MaxStoredBytes)
	}
	return nil
}

// namespaceRow is a namespaces row, in the units stored.
type namespaceRow struct {
	Name              string    `db:"name"`
	DefaultLeaseTTLMS int64     `db:"default_lease_ttl_ms"`
	MaxLeaseTTLMS     int64     `db:"max_lease_ttl_ms"`
	MaxResultBytes    int32     `db:"max_result_bytes"`
	RetentionMS       int64     `db:"retention_ms"`
	MaxAttempts       int32     `db:"max_attempts"`
	EventRetentionMS  int64     `db:"event_retention_ms"`
	MaxHeldLeases     int64     `db:"max_held_leases"`
	MaxStoredBytes    int64     `db:"max_stored_bytes"`
	CreatedAt         time.Time `db:"created_at"`
	UpdatedAt         time.Time `db:"updated_at"`
}

func (r namespaceRow) settings() NamespaceSettings {
	return NamespaceSettings{
		DefaultLeaseTTL: time.Duration(r.DefaultLeaseTTLMS) * time.Millisecond,
		MaxLeaseTTL:     time.Duration(r.MaxLeaseTTLMS) * time.Millisecond,
		MaxResultBytes:  int(r.MaxResultBytes),
		Retention:       time.Duration(r.RetentionMS) * time.Millisecond,
		MaxAttempts:     int(r.MaxAttempts),
		EventRetention:  time.Duration(r.EventRetentionMS) * time.Millisecond,
		MaxHeldLeases:   r.MaxHeldLeases,
		MaxStoredBytes:  r.MaxStoredBytes,
	}
}

// settingsArgs are a namespace's settings as the namespace statements take
// them ($2 to $9).
func settingsArgs(n NamespaceSettings) []any {
	return []any{n.DefaultLeaseTTL.Milliseconds(), n.MaxLeaseTTL.Milliseconds(), n.MaxResultBytes,
		n.Retention.Milliseconds(), n.MaxAttempts, n.EventRetention.Milliseconds(),
		n.MaxHeldLeases, n.MaxStoredBytes}
}

// namespaceCache keeps the settings of namespaces that exist in the
// database, so that the hot path checks limits without a round trip. Only
// stored namespaces are cached: requests naming made-up namespaces cannot
// grow it.
type namespaceCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]cachedNamespace
}

type cachedNamespace struct {
	settings NamespaceSettings
	loadedAt time.Time
}

func newNamespaceCache(ttl time.Duration) *namespaceCache {
	return &namespaceCache{ttl: ttl, m: make(map[string]cachedNamespace)}
}

func (c *namespaceCache) get(name string) (NamespaceSettings, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cached, ok := c.m[name]
	if !ok || time.Since(cached.loadedAt) > c.ttl {
		return NamespaceSettings{}, false
	}
	return cached.settings, true
}

func (c *namespaceCache) put(name string, settings NamespaceSettings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[name] = cachedNamespace{settings: settings, loadedAt: time.Now()}
}

// namespace returns a namespace's settings, and whether the namespace is
// stored. A namespace that is not stored yet has the default settings; it is
// not created here, so that a request refused by validation changes nothing.
func (s *Store) namespace(ctx context.Context, name string) (NamespaceSettings, bool, error) {
	if settings, ok := s.namespaces.get(name); ok {
		return settings, true, nil
	}
	found, err := queryRows[namespaceRow](ctx, s.pool, query("namespace_get"), name)
	if err != nil {
		return NamespaceSettings{}, false, err
	}
	if len(found) == 0 {
		return s.defaults, false, nil
	}
	settings := found[0].settings()
	s.namespaces.put(name, settings)
	return settings, true, nil
}

// requireNamespace fails with ErrNotFound for a namespace that does not
// exist, so that the listings tell a misspelt namespace from an empty one.
func (s *Store) requireNamespace(ctx context.Context, name string) error {
	_, stored, err := s.namespace(ctx, name)
	if err != nil {
		return err
	}
	if !stored {
		return fmt.Errorf("namespace %s: %w", name, ErrNotFound)
	}
	return nil
}

// ensureNamespace creates a namespace with the default settings if it does
// not exist yet, and returns the settings it has. This is where the policy
// of creation on first use lives (Config.NoAutoCreateNamespaces,
// Config.MaxNamespacesPerPattern): with it off, a namespace that does not
// exist is ErrNotFound, naming who creates it.
func (s *Store) ensureNamespace(ctx context.Context, name string) (NamespaceSettings, error) {
	if !s.autoCreateNamespaces {
		settings, stored, err := s.namespace(ctx, name)
		if err == nil && !stored {
			err = fmt.Errorf("namespace %s does not exist and namespaces are not created on first use: "+
				"an admin creates it (ledgerctl namespaces create %s --reason ...): %w", name, name, ErrNotFound)
		}
		return settings, err
	}
	args := append(append([]any{name}, settingsArgs(s.defaults)...), callerFrom(ctx))
	ensure := func(q querier) (NamespaceSettings, error) {
		found, err := queryRows[namespaceRow](ctx, q, query("namespace_ensure"), args...)
		if err != nil {
			return NamespaceSettings{}, err
		}
		if len(found) == 0 {
			return NamespaceSettings{}, errRaced
		}
		return found[0].settings(), nil
	}
	settings, err := retryRaces(ctx, func() (NamespaceSettings, error) {
		if patterns := s.cappedPatterns(ctx); len(patterns) > 0 {
			return withinPatternCap(ctx, s, name, patterns, func(tx pgx.Tx) (NamespaceSettings, error) { return ensure(tx) })
		}
		return ensure(s.pool)
	})
	if err != nil {
		return NamespaceSettings{}, fmt.Errorf("create namespace %s: %w", name, err)
	}
	s.namespaces.put(name, settings)
	return settings, nil
}
