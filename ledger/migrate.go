package ledger

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/ledgerd/ledgerd/migrations"
)

// migrationsTable records the applied migrations.
const migrationsTable = "ledgerd_migrations"

// migrationLockBase seeds the PostgreSQL advisory lock that serializes
// migrators: when several replicas start at once, one migrates and the
// others wait, then find nothing left to do. The lock is per schema, so
// ledgers in different schemas of one database (tests do this) migrate
// independently.
const migrationLockBase = 0x6c6564676572 // "ledger"

func migrationLockID(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	schema, err := currentSchema(ctx, pool)
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte(schema))
	return int64(h.Sum64() ^ migrationLockBase), nil
}

// Migrate applies the pending migrations in order, each in its own
// transaction, and records them. It is safe to run from several processes
// at once, and a no-op when nothing is pending. It returns the versions it
// applied, and fails with ErrSchemaTooNew if the database was migrated by a
// newer ledgerd whose migrations this one may not run beside (a newer schema
// that only added to this one's is served as it is).
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) ([]int64, error) {
	provider, closeDB, err := newMigrationProvider(ctx, pool, logger)
	if err != nil {
		return nil, err
	}
	defer closeDB()
	if err := checkNotTooNew(ctx, provider, pool); err != nil {
		return nil, err
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", dbError(err))
	}
	applied := make([]int64, 0, len(results))
	for _, result := range results {
		applied = append(applied, result.Source.Version)
	}
	return applied, nil
}

// CheckSchema verifies that the database's schema is the one this ledgerd
// can serve: it fails with ErrSchemaTooNew when the database is ahead by a
// migration this ledgerd may not run beside (see checkNotTooNew), and with
// ErrSchemaBehind when migrations are pending.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	provider, closeDB, err := newMigrationProvider(ctx, pool, nil)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := checkNotTooNew(ctx, provider, pool); err != nil {
		return err
	}
	pending, err := provider.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("check schema: %w", dbError(err))
	}
	if pending {
		return ErrSchemaBehind
	}
	return nil
}

func newMigrationProvider(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (*goose.Provider, func(), error) {
	lockID, err := migrationLockID(ctx, pool)
	if err != nil {
		return nil, nil, err
	}
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(lockID),
		lock.WithLockTimeout(1, 600), // poll every second, for up to 10 minutes
	)
	if err != nil {
		return nil, nil, fmt.Errorf("migration lock: %w", err)
	}
	options := []goose.ProviderOption{
		goose.WithTableName(migrationsTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	}
	if logger != nil {
		options = append(options, goose.WithSlog(logger))
	}
	db := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, options...)
	if err != nil {
		_ = db.Close()
		return nil, nil, fmt.Errorf("migrations: %w", err)
	}
	return provider, func() { _ = db.Close() }, nil
}

// checkNotTooNew refuses a database migrated beyond what this ledgerd knows,
// unless every migration beyond it is one an older ledgerd may run beside:
// the database's ledgerd_schema_compat row names the oldest schema version
// a ledgerd must know to serve it (migrations/00010_fencing_epoch.sql), and
// only the migrations that an older ledgerd would break on raise it. That is
// what lets a rolling upgrade, or a rollback of the binary, run the older
// ledgerd on the newer schema (see docs/operations.md, "Upgrades and
// rollbacks").
func checkNotTooNew(ctx context.Context, provider *goose.Provider, pool *pgxpool.Pool) error {
	current, known, err := provider.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", dbError(err))
	}
	if current <= known {
		return nil
	}
	required, err := minBinarySchema(ctx, pool)
	if err != nil {
		return err
	}
	if required > known {
		return fmt.Errorf("%w: database at version %d needs a ledgerd that knows version %d or later, this one knows up to %d",
			ErrSchemaTooNew, current, required, known)
	}
	return nil
}

// minBinarySchema reads the oldest schema version a ledgerd must know to
// serve the database. A database whose schema predates the record (before
// 00010) could only be ahead of a ledgerd older than the record too: such a
// ledgerd refuses any newer schema, and so does this answer (MaxInt64).
func minBinarySchema(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var present bool
	err := pool.QueryRow(ctx, `SELECT to_regclass('ledgerd_schema_compat') IS NOT NULL`).Scan(&present)
	if err != nil {
		return 0, fmt.Errorf("read the schema's compatibility: %w", dbError(err))
	}
	if !present {
		return math.MaxInt64, nil
	}
	var required int64
	err = pool.QueryRow(ctx, `SELECT min_binary_schema FROM ledgerd_schema_compat`).Scan(&required)
	if errors.Is(err, pgx.ErrNoRows) {
		return math.MaxInt64, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the schema's compatibility: %w", dbError(err))
	}
	return required, nil
}
