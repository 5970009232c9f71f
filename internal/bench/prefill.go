package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// prefillPrefix names the prefilled keys: prefill-0000000000 and on.
const prefillPrefix = "prefill-"

// Prefilling writes chunks of this many entries, each in one statement,
// prefillParallel at a time.
const (
	prefillChunk    = 200_000
	prefillParallel = 2
)

// fillSQL inserts the entries $3..$4 (numbers) under prefix $2 in
// namespace $1 as ledgerd leaves a completed key: the row that
// reserve_insert.sql inserts and complete.sql finishes (token 1, attempt 1,
// result $5, expiring $6 ms from now), and the two events those statements
// write, 'reserved' and 'completed'. Entries already there are kept (and
// get no events).
const fillSQL = `
WITH inserted AS (
    INSERT INTO entries (namespace, key, state, owner, fencing_token, lease_expires_at, attempts,
                         fingerprint, result, metadata, created_at, updated_at, finished_at, expires_at)
    SELECT $1, $2 || lpad(i::text, 10, '0'), 'completed', 'ledgerbench/' || (i % 64), 1, NULL, 1,
           '\x'::bytea, $5::bytea, '{}', now(), now(), now(), now() + $6::bigint * interval '1 millisecond'
    FROM generate_series($3::bigint, $4::bigint) AS i
    ON CONFLICT (namespace, key) DO NOTHING
    RETURNING namespace, key, owner
)
INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
SELECT i.namespace, i.key, k.kind, 1, i.owner, 1, $7, k.detail
FROM inserted i
CROSS JOIN LATERAL (VALUES ('reserved', '{}'::jsonb),
                           ('completed', jsonb_build_object('result_bytes', octet_length($5::bytea)))) AS k (kind, detail)`

// fill inserts the entries first..last (inclusive) under prefix, in chunks,
// prefillParallel at a time, reporting progress; it returns how many it
// inserted.
func fill(ctx context.Context, pool *pgxpool.Pool, namespace, prefix string, first, last int64, expiresIn time.Duration, progress io.Writer) (int64, error) {
	type chunk struct{ first, last int64 }
	chunks := make(chan chunk)
	var (
		mu       sync.Mutex
		inserted int64
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range prefillParallel {
		wg.Go(func() {
			for c := range chunks {
				tag, err := pool.Exec(ctx, fillSQL, namespace, prefix, c.first, c.last, result, expiresIn.Milliseconds(), rawCaller)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("insert %s%d..%d: %w", prefix, c.first, c.last, err)
				}
				inserted += tag.RowsAffected() / 2 // two events per inserted entry
				if progress != nil {
					fmt.Fprintf(progress, "ledgerbench: filled %s… up to %d of %d (%.0f entries/s)\n",
						prefix, c.last+1, last+1, float64(inserted)/time.Since(start).Seconds())
				}
				mu.Unlock()
			}
		})
	}
	for c := first; c <= last; c += prefillChunk {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		chunks <- chunk{first: c, last: min(c+prefillChunk-1, last)}
	}
	close(chunks)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return inserted, firstErr
}

// prefill makes sure namespace holds n prefilled entries, writing the
// missing ones, then vacuums and analyzes the tables (as autovacuum would
// have done on a ledger that grew to this size) and reports the sizes.
//
// A run that was interrupted may have committed a chunk without the one
// before it (prefillParallel run at once): prefill starts again that many
// chunks below the count it finds, and the entries already there are kept.
func prefill(ctx context.Context, pool *pgxpool.Pool, namespace string, n int64, progress io.Writer) (*PrefillResult, error) {
	start := time.Now()
	var have int64
	err := pool.QueryRow(ctx, `SELECT count(*) FROM entries WHERE namespace = $1 AND key >= $2 AND key < $3`,
		namespace, prefillPrefix, prefixEnd(prefillPrefix)).Scan(&have)
	if err != nil {
		return nil, fmt.Errorf("count prefilled entries: %w", err)
	}
	r := &PrefillResult{Entries: n}
	if have < n {
		from := max(0, have-prefillParallel*prefillChunk)
		from -= from % prefillChunk
		if r.Inserted, err = fill(ctx, pool, namespace, prefillPrefix, from, n-1, defaultRetention, progress); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "ledgerbench: vacuuming and analyzing entries and events\n")
		if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) entries, events"); err != nil {
			return nil, fmt.Errorf("vacuum: %w", err)
		}
	}
	r.Seconds = time.Since(start).Seconds()
	err = pool.QueryRow(ctx, `
		SELECT (SELECT reltuples::bigint FROM pg_class WHERE oid = 'entries'::regclass),
		       (SELECT reltuples::bigint FROM pg_class WHERE oid = 'events'::regclass),
		       pg_database_size(current_database())`).Scan(&r.EntriesTotal, &r.EventsTotal, &r.DatabaseBytes)
	if err != nil {
		return nil, fmt.Errorf("table sizes: %w", err)
	}
	return r, nil
}

// prefixEnd is the least string above every string that starts with
// prefix (prefix ends in a byte below 0xff).
func prefixEnd(prefix string) string {
	b := []byte(prefix)
	b[len(b)-1]++
	return string(b)
}
