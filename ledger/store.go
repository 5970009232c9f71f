package ledger

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures a Store. Zero fields take their defaults.
type Config struct {
	// Limits bound the request fields. Defaults to DefaultLimits().
	Limits Limits
	// NamespaceDefaults are the settings a namespace is created with on its
	// first Reserve. Defaults to DefaultNamespaceSettings().
	NamespaceDefaults NamespaceSettings
	// NoAutoCreateNamespaces makes a Reserve or ReserveBatch in a namespace
	// that does not exist fail with ErrNotFound, instead of creating the
	// namespace with NamespaceDefaults: on a shared service, namespaces are
	// made by admins (CreateNamespace), so that a worker cannot escape its
	// namespace's quotas by reserving in a fresh one. Defaults to false
	// (namespaces are created on first use), as in development mode.
	NoAutoCreateNamespaces bool
	// MaxNamespacesPerPattern bounds the namespaces that a caller
	// authorized by a prefix pattern (see WithCreatorPatterns) may create,
	// through CreateNamespace or a Reserve's auto-creation: counted over
	// the namespaces the pattern matches, under an advisory lock on the
	// pattern, so that the bound is exact across replicas. A creation over
	// it fails with a *QuotaError. Defaults to 0: no bound.
	MaxNamespacesPerPattern int
	// AdminEventRetention is how long the events that record admin
	// actions are kept at least, whatever the namespace's event retention:
	// force_released, reset, namespace_changed and namespace_created, and
	// the platform's events (empty namespace: tokens and role bindings),
	// which are deleted after it. So a namespace's admin cannot erase the
	// record of what it did by shortening its event retention. Defaults to
	// 365 days.
	AdminEventRetention time.Duration
	// HeartbeatEventInterval samples the heartbeat audit events: at most one
	// per lease per interval. A negative value records none; a tiny one
	// (time.Nanosecond) records every heartbeat. Defaults to 1m.
	HeartbeatEventInterval time.Duration
	// EventSettlingDelay is how far behind the database's now ListEvents
	// stops: longer than any statement of ledgerd may run, so that a listing
	// never skips an event committed after it with an earlier time. A
	// negative value stops at now (tests). Defaults to 10s.
	EventSettlingDelay time.Duration
	// Logger receives what the Store reports on its own, such as a lost
	// LISTEN connection. Defaults to slog.Default().
	Logger *slog.Logger
	// NamespaceCacheTTL is how long a namespace's settings are cached before
	// they are read again; a change of settings takes effect within it.
	// Defaults to 10s.
	NamespaceCacheTTL time.Duration
	// Coalesce configures the gathering of concurrent Reserves, Lookups and
	// Completes into one statement and one commit. On by default.
	Coalesce CoalesceConfig
	// MaxConcurrentBatches bounds the batch calls (ReserveBatch,
	// CompleteBatch, LookupBatch) that run at once; others wait for a
	// slot. A few batches of 1000 keys already keep the database busy, and
	// the bound keeps their memory bounded. Defaults to 4.
	MaxConcurrentBatches int
	// ReadPool, if set, serves the reads that may be stale: ListEntries,
	// GetHistory and ListEvents. It is a pool over a hot standby of the
	// database (see ConfigureReadPool), so their answers may lag the
	// primary's by the standby's replication lag; ListEvents stops where the
	// standby has replayed (see EventPage.SettledUntil). Everything else,
	// Lookup included, stays on the Store's pool. While the read pool's
	// database cannot be reached, those reads are served by the Store's
	// pool. Nil: the Store's pool serves them. The Store does not close it.
	ReadPool *pgxpool.Pool
	// ReadPoolRetryInterval is how long the reads stay on the Store's pool
	// after the read pool's database could not be reached, before one tries
	// it again. Defaults to 5s.
	ReadPoolRetryInterval time.Duration
	// MaxTokenTTL is the longest an API token may live: CreateToken refuses
	// a longer ttl, and gives it to a token created without one (Bootstrap's
	// included). A negative value sets no maximum: a token without a ttl
	// lives until revoked. Defaults to DefaultMaxTokenTTL.
	MaxTokenTTL time.Duration
}

// DefaultMaxTokenTTL is the default Config.MaxTokenTTL: 90 days, so that a
// forgotten token stops working within a quarter.
const DefaultMaxTokenTTL = 90 * 24 * time.Hour

func (c Config) withDefaults() Config {
	c.Limits = c.Limits.withDefaults()
	c.NamespaceDefaults = c.NamespaceDefaults.withDefaults()
	setDefault(&c.NamespaceCacheTTL, 10*time.Second)
	setDefault(&c.HeartbeatEventInterval, time.Minute)
	setDefault(&c.EventSettlingDelay, 10*time.Second)
	c.Coalesce = c.Coalesce.withDefaults()
	setDefault(&c.MaxConcurrentBatches, 4)
	setDefault(&c.ReadPoolRetryInterval, 5*time.Second)
	setDefault(&c.AdminEventRetention, 365*24*time.Hour)
	setDefault(&c.MaxTokenTTL, DefaultMaxTokenTTL)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports a configuration that New would refuse: a non-positive
// limit, or namespace defaults outside the limits.
func (c Config) Validate() error { return c.withDefaults().validate() }

func (c Config) validate() error {
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if err := c.NamespaceDefaults.validate(c.Limits); err != nil {
		return fmt.Errorf("namespace defaults: %w", err)
	}
	if err := c.Coalesce.validate(c.Limits); err != nil {
		return err
	}
	if c.MaxConcurrentBatches < 0 {
		return fmt.Errorf("MaxConcurrentBatches must not be negative (0: the default, 4), got %d", c.MaxConcurrentBatches)
	}
	if c.NamespaceCacheTTL < 0 {
		return fmt.Errorf("NamespaceCacheTTL must not be negative, got %s", c.NamespaceCacheTTL)
	}
	if c.MaxNamespacesPerPattern < 0 {
		return fmt.Errorf("MaxNamespacesPerPattern must not be negative (0: no bound), got %d", c.MaxNamespacesPerPattern)
	}
	if c.AdminEventRetention < c.Limits.MinEventRetention {
		return fmt.Errorf("AdminEventRetention %s is below MinEventRetention %s", c.AdminEventRetention, c.Limits.MinEventRetention)
	}
	if c.ReadPoolRetryInterval < 0 {
		return fmt.Errorf("ReadPoolRetryInterval must not be negative (0: the default, 5s), got %s", c.ReadPoolRetryInterval)
	}
	return nil
}

// Store is the ledger over PostgreSQL. It is safe for concurrent use, and
// any number of Stores (in any number of processes) may share one database:
// all coordination happens in the database.
type Store struct {
	pool       *pgxpool.Pool
	reads      *readRouter // ListEntries, GetHistory, ListEvents
	limits     Limits
	defaults   NamespaceSettings
	namespaces *namespaceCache
	waits      *waitHub
	logger     *slog.Logger
	coalesce   *coalescers   // nil when disabled
	batchSlots chan struct{} // one per running batch call

	heartbeatEventInterval  time.Duration
	eventSettlingDelay      time.Duration
	autoCreateNamespaces    bool
	maxNamespacesPerPattern int
	adminEventRetention     time.Duration
	maxTokenTTL             time.Duration // negative: none

	waitsEnded   chan struct{} // closed by EndWaits
	endWaitsOnce sync.Once
}

// New returns a Store over a pool whose database has been migrated (see
// Migrate). It fails if the configuration is invalid.
func New(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("ledger config: %w", err)
	}
	s := &Store{
		pool:       pool,
		limits:     cfg.Limits,
		defaults:   cfg.NamespaceDefaults,
		namespaces: newNamespaceCache(cfg.NamespaceCacheTTL),
		waits:      newWaitHub(),
		logger:     cfg.Logger,
		waitsEnded: make(chan struct{}),

		heartbeatEventInterval:  cfg.HeartbeatEventInterval,
		eventSettlingDelay:      cfg.EventSettlingDelay,
		autoCreateNamespaces:    !cfg.NoAutoCreateNamespaces,
		maxNamespacesPerPattern: cfg.MaxNamespacesPerPattern,
		adminEventRetention:     cfg.AdminEventRetention,
		maxTokenTTL:             cfg.MaxTokenTTL,
	}
	s.reads = &readRouter{primary: pool, standby: cfg.ReadPool, retryInterval: cfg.ReadPoolRetryInterval, logger: cfg.Logger}
	s.coalesce = newCoalescers(s, cfg.Coalesce)
	s.batchSlots = make(chan struct{}, cfg.MaxConcurrentBatches)
	return s, nil
}

// Limits returns the limits the Store enforces, with defaults filled in.
func (s *Store) Limits() Limits { return s.limits }

// NamespaceDefaults returns the settings new namespaces get.
func (s *Store) NamespaceDefaults() NamespaceSettings { return s.defaults }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return dbError(s.pool.Ping(ctx)) }

type callerKey struct{}

// WithCaller returns a context that records caller as the identity that
// made the request; the audit events written for it carry that identity.
// Without it, events record "anonymous".
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

func callerFrom(ctx context.Context) string {
	if caller, ok := ctx.Value(callerKey{}).(string); ok && caller != "" {
		return caller
	}
	return "anonymous"
}

//go:embed queries/*.sql
var queryFiles embed.FS

// queries holds the text of every queries/<name>.sql, read once: the hot
// path must not copy a file per call.
var queries = func() map[string]string {
	files, err := fs.Glob(queryFiles, "queries/*.sql")
	if err != nil {
		panic(err)
	}
	texts := make(map[string]string, len(files))
	for _, file := range files {
		text, err := queryFiles.ReadFile(file)
		if err != nil {
			panic(err)
		}
		texts[strings.TrimSuffix(path.Base(file), ".sql")] = string(text)
	}
	return texts
}()

// query returns the text of queries/<name>.sql. The files are embedded, so a
// missing one is a programming error caught by every test.
func query(name string) string {
	text, ok := queries[name]
	if !ok {
		panic(fmt.Sprintf("ledger: missing query %s", name))
	}
	return text
}

// querier runs statements: the pool, or a transaction (pgx.Tx).
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// queryRows runs a statement and collects its rows into T by column name.
// Driver errors become ledger errors (see dbError).
func queryRows[T any](ctx context.Context, q querier, sql string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbError(err)
	}
	found, err := collectRows[T](rows)
	return found, dbError(err)
}

// queryOne runs a statement that returns at most one row, and returns it
// (nil for none).
func queryOne[T any](ctx context.Context, q querier, sql string, args ...any) (*T, error) {
	found, err := queryRows[T](ctx, q, sql, args...)
	if err != nil || len(found) == 0 {
		return nil, err
	}
	return &found[0], nil
}

// numbered is a row of a statement for many items, which returns the
// item's position (from 1) with each row: the row's value and position.
type numbered[T any] interface {
	item() (n int, value *T)
}

// queryNumbered runs a statement for n items that returns at most one row
// per item, numbered, and returns each item's row in the items' order (nil
// for an item without one).
func queryNumbered[R any, T any, PR interface {
	*R
	numbered[T]
}](ctx context.Context, q querier, n int, sql string, args ...any) ([]*T, error) {
	found, err := queryRows[R](ctx, q, sql, args...)
	if err != nil {
		return nil, err
	}
	rows := make([]*T, n)
	for i := range found {
		position, value := PR(&found[i]).item()
		rows[position-1] = value
	}
	return rows, nil
}

// maxRaceRetries bounds how often a call reads again after a concurrent
// change made its compare-and-set miss. Each retry sees a newer committed
// state, so in practice one retry settles it.
const maxRaceRetries = 8

// errRaced is returned by a step that lost a race and must be run again.
var errRaced = errors.New("raced with a concurrent change")

// retryRaces runs step until it does not report errRaced.
func retryRaces[T any](ctx context.Context, step func() (T, error)) (T, error) {
	for range maxRaceRetries {
		result, err := step()
		if !errors.Is(err, errRaced) {
			return result, err
		}
		if err := ctx.Err(); err != nil {
			var zero T
			return zero, err
		}
	}
	var zero T
	return zero, fmt.Errorf("%w: key contended beyond %d retries", ErrUnavailable, maxRaceRetries)
}
