package chaos

import (
	"context"
	"embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerd/ledgerd/ledger"
)

//go:embed queries/*.sql
var queries embed.FS

// query returns the SQL of queries/<name>.sql.
func query(name string) string {
	b, err := queries.ReadFile("queries/" + name + ".sql")
	if err != nil {
		panic(fmt.Sprintf("chaos: missing query %s: %v", name, err)) // a build mistake
	}
	return string(b)
}

// sinkWriteTimeout bounds one sink write: the sink's database may be
// paused or restarting, and a worker must not hang on it.
const sinkWriteTimeout = 2 * time.Second

// Sink is where the workers' work writes its effect: the fenced sink and
// the unfenced control sink (see queries/sink_schema.sql). It is safe for
// concurrent use.
type Sink struct {
	pool *pgxpool.Pool
}

// openSink connects to the sinks' database with a small pool.
func openSink(ctx context.Context, databaseURL string, maxConns int32) (*Sink, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("sink database URL: %w", err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.ConnectTimeout = sinkWriteTimeout
	// As ledgerd's: across a failover, no write is acknowledged that the
	// synchronous standby does not have.
	ledger.ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("sink pool: %w", err)
	}
	return &Sink{pool: pool}, nil
}

// createSinkSchema creates the sinks' tables if they do not exist.
func createSinkSchema(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, query("sink_schema")); err != nil {
		return fmt.Errorf("create the sink schema: %w", err)
	}
	return nil
}

// Close closes the pool.
func (s *Sink) Close() { s.pool.Close() }

// WriteFenced writes value for the key under token, and reports whether
// the sink accepted it (false: it has seen a higher token for the key).
func (s *Sink) WriteFenced(ctx context.Context, namespace, key string, token int64, value, writer string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, sinkWriteTimeout)
	defer cancel()
	var accepted int64
	if err := s.pool.QueryRow(ctx, query("sink_fenced"), namespace, key, token, value, writer).Scan(&accepted); err != nil {
		return false, fmt.Errorf("fenced write %s/%s token %d: %w", namespace, key, token, err)
	}
	return accepted == 1, nil
}

// WriteControl appends value for the key to the control sink, whatever
// the token.
func (s *Sink) WriteControl(ctx context.Context, namespace, key string, token int64, value, writer string) error {
	ctx, cancel := context.WithTimeout(ctx, sinkWriteTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, query("sink_control"), namespace, key, token, value, writer); err != nil {
		return fmt.Errorf("control write %s/%s token %d: %w", namespace, key, token, err)
	}
	return nil
}
