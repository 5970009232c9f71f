package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerd/ledgerd/ledger"
)

// What ledgerd passes to its statements for a request that sets nothing:
// the namespace defaults (see ledger.DefaultNamespaceSettings) and the
// caller recorded in the audit events.
const (
	defaultLeaseTTL  = 30 * time.Second
	defaultRetention = 168 * time.Hour
	rawCaller        = "ledgerbench"
	// rawApplicationName names the sessions of ledgerbench's own pool,
	// the raw side's, in pg_stat_activity.
	rawApplicationName = "ledgerbench"
	// maxRawRetries bounds the re-reads after a lost race, as ledgerd's
	// own retry loop does.
	maxRawRetries = 8
)

// rawDB runs ledgerd's statements (ledger.Statement) directly, with the
// arguments ledgerd passes for the same request, over a pgx pool configured
// as ledgerd's is (statements prepared and cached per connection). It is
// the ceiling that ledgerd is measured against.
type rawDB struct {
	pool                                       *pgxpool.Pool
	reserveInsertSQL, completeSQL, takeoverSQL string
	lookupSQL                                  string
	reserveBatchSQL, completeBatchSQL          string
}

func newRawDB(pool *pgxpool.Pool) (*rawDB, error) {
	r := &rawDB{pool: pool}
	for name, text := range map[string]*string{
		"reserve_insert":       &r.reserveInsertSQL,
		"complete":             &r.completeSQL,
		"reserve_takeover":     &r.takeoverSQL,
		"lookup":               &r.lookupSQL,
		"reserve_insert_batch": &r.reserveBatchSQL,
		"complete_batch":       &r.completeBatchSQL,
	} {
		sql, err := ledger.Statement(name)
		if err != nil {
			return nil, err
		}
		*text = sql
	}
	return r, nil
}

// reserveRow is what the raw side reads of a Reserve's row.
type reserveRow struct {
	inserted     bool
	state        string
	owner        string
	fencingToken int64
	leaseExpired bool
}

// errNoRow reports a statement that returned no row: a lost race (the key
// changed after the statement's snapshot), which ledgerd answers by
// running it again.
var errNoRow = errors.New("no row")

// reserveInsert runs Reserve's first statement as ledgerd does for a
// request with no fingerprint and no metadata.
func (r *rawDB) reserveInsert(ctx context.Context, namespace, key, owner string, ttl time.Duration) (reserveRow, error) {
	var row reserveRow
	err := r.queryOne(ctx, r.reserveInsertSQL,
		[]any{namespace, key, owner, ttl.Milliseconds(), []byte{}, map[string]string{}, rawCaller},
		map[string]any{"inserted": &row.inserted, "state": &row.state, "owner": &row.owner,
			"fencing_token": &row.fencingToken, "lease_expired": &row.leaseExpired})
	return row, err
}

// complete runs Complete's statement under token.
func (r *rawDB) complete(ctx context.Context, namespace, key string, token int64) error {
	var changed bool
	err := r.queryOne(ctx, r.completeSQL,
		[]any{namespace, key, token, result, defaultRetention.Milliseconds(), rawCaller},
		map[string]any{"changed": &changed})
	if err == nil && !changed {
		err = fmt.Errorf("complete %s token %d: the guard did not match", key, token)
	}
	return err
}

// reserveBatch runs ReserveBatch's statement for fresh keys, as ledgerd
// does for a batch with no fingerprints and no metadata, and returns the
// granted tokens in the keys' order.
func (r *rawDB) reserveBatch(ctx context.Context, namespace string, keys []string, owner string, ttl time.Duration) ([]int64, error) {
	n := len(keys)
	namespaces, owners, callers := make([]string, n), make([]string, n), make([]string, n)
	ttls, fingerprints, metadata := make([]int64, n), make([][]byte, n), make([]map[string]string, n)
	for i := range keys {
		namespaces[i], owners[i], callers[i] = namespace, owner, rawCaller
		ttls[i], fingerprints[i], metadata[i] = ttl.Milliseconds(), []byte{}, map[string]string{}
	}
	rows, err := r.pool.Query(ctx, r.reserveBatchSQL, namespaces, keys, owners, ttls, fingerprints, metadata, callers)
	if err != nil {
		return nil, err
	}
	// The columns: n, inserted, namespace, key, state, owner, fencing_token, ...
	type granted struct {
		n        int64
		inserted bool
		token    int64
	}
	found, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (granted, error) {
		values, err := row.Values()
		if err != nil {
			return granted{}, err
		}
		return granted{n: values[0].(int64), inserted: values[1].(bool), token: values[6].(int64)}, nil
	})
	if err != nil {
		return nil, err
	}
	tokens := make([]int64, n)
	for _, g := range found {
		if !g.inserted {
			return nil, fmt.Errorf("reserve_insert_batch found the fresh key %s", keys[g.n-1])
		}
		tokens[g.n-1] = g.token
	}
	if len(found) != n {
		return nil, fmt.Errorf("reserve_insert_batch returned %d rows for %d keys", len(found), n)
	}
	return tokens, nil
}

// completeBatch runs CompleteBatch's statement under the tokens.
func (r *rawDB) completeBatch(ctx context.Context, namespace string, keys []string, tokens []int64) error {
	n := len(keys)
	namespaces, results, retentions, callers := make([]string, n), make([][]byte, n), make([]int64, n), make([]string, n)
	for i := range keys {
		namespaces[i], results[i], retentions[i], callers[i] = namespace, result, defaultRetention.Milliseconds(), rawCaller
	}
	rows, err := r.pool.Query(ctx, r.completeBatchSQL, namespaces, keys, tokens, results, retentions, callers)
	if err != nil {
		return err
	}
	changed, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (bool, error) {
		var c bool
		return c, row.Scan(nil, &c, nil, nil, nil, nil)
	})
	if err != nil {
		return err
	}
	for _, c := range changed {
		if !c {
			return fmt.Errorf("complete_batch: a guard did not match")
		}
	}
	if len(changed) != n {
		return fmt.Errorf("complete_batch returned %d rows for %d keys", len(changed), n)
	}
	return nil
}

// lookup runs Lookup's statement.
func (r *rawDB) lookup(ctx context.Context, namespace, key string) error {
	var state string
	return r.queryOne(ctx, r.lookupSQL, []any{namespace, key}, map[string]any{"state": &state})
}

// contendedReserve is Reserve on a key other owners hold, as ledgerd's
// reserveOnce decides it: the first statement reads (or inserts) the key;
// a lease that ran out is taken over by the conditional second statement;
// a lost race reads again.
func (r *rawDB) contendedReserve(ctx context.Context, namespace, key, owner string, ttl time.Duration) (string, error) {
	for range maxRawRetries {
		row, err := r.reserveInsert(ctx, namespace, key, owner, ttl)
		switch {
		case errors.Is(err, errNoRow):
			continue
		case err != nil:
			return "", err
		case row.inserted:
			return outcomeAcquired, nil
		case row.state == "leased" && !row.leaseExpired:
			return outcomeInProgress, nil
		case row.state != "leased" && row.state != "released":
			return "", fmt.Errorf("contended key %s is %s", key, row.state)
		}
		var token int64
		err = r.queryOne(ctx, r.takeoverSQL,
			[]any{namespace, key, owner, ttl.Milliseconds(), nil, row.fencingToken, rawCaller, row.owner, row.state},
			map[string]any{"fencing_token": &token})
		switch {
		case errors.Is(err, errNoRow):
			continue // someone else took over first: read again
		case err != nil:
			return "", err
		}
		return outcomeTakeover, nil
	}
	return "", fmt.Errorf("contended key %s: still racing after %d reads", key, maxRawRetries)
}

// queryOne runs a statement that returns at most one row and scans the
// columns named in into (the others are skipped, not decoded). No row is
// errNoRow.
func (r *rawDB) queryOne(ctx context.Context, sql string, args []any, into map[string]any) error {
	rows, err := r.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return errNoRow
	}
	fields := rows.FieldDescriptions()
	dest := make([]any, len(fields))
	for i, f := range fields {
		dest[i] = into[f.Name] // nil: pgx skips the column
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// openPool opens a pool over url with at most conns connections, and
// checks that the database answers.
func openPool(ctx context.Context, url string, conns int) (*pgxpool.Pool, error) {
	config, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("--database-url is not a valid PostgreSQL URL or DSN")
	}
	config.MaxConns = int32(conns)
	config.ConnConfig.RuntimeParams["application_name"] = rawApplicationName
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	return pool, nil
}
