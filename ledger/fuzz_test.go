package ledger_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

// The fuzz targets drive the Store's public API with random requests over
// a real database and check what docs/design.md's safety rule 7 promises:
// bad input gets a *ValidationError naming the field and changes nothing. Every
// other answer must be a success or one of the ledger's errors: an error
// that is none of them (a driver error, say) is an INTERNAL to clients.
// `make test` runs each briefly; `make fuzz` for FUZZTIME.

// fuzzBundle is the store a fuzzing process drives: one per process.
type fuzzBundle struct {
	store *ledger.Store
	pool  *pgxpool.Pool
}

func setupFuzz(f *testing.F) fuzzBundle {
	f.Helper()
	// Short leases and waits, so that a random Reserve does not hold the
	// fuzzer up.
	b := ledgertest.Store(f, ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 10 * time.Millisecond, MaxWait: 20 * time.Millisecond}})
	return fuzzBundle{store: b.Store, pool: b.Pool}
}

// ledgerErrors are the errors a request may legitimately end with.
var ledgerErrors = []error{
	ledger.ErrNotFound, ledger.ErrLeaseLost, ledger.ErrFingerprintMismatch, ledger.ErrResultConflict,
	ledger.ErrNotLeased, ledger.ErrAlreadyExists,
}

// do runs one call and checks its outcome.
func (b fuzzBundle) do(t *testing.T, call string, run func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := b.state(t)
	err := run(ctx)
	var validation *ledger.ValidationError
	switch {
	case err == nil:
	case errors.As(err, &validation):
		require.NotEmpty(t, validation.Field, "%s: %v", call, err)
		require.True(t, utf8.ValidString(validation.Error()), "%s: the message must be UTF-8 (gRPC sends it): %q", call, err)
		if after := b.state(t); after != before {
			t.Fatalf("%s refused (%v) but changed the database:\nbefore: %s\nafter:  %s", call, err, before, after)
		}
	default:
		for _, known := range ledgerErrors {
			if errors.Is(err, known) {
				return
			}
		}
		t.Fatalf("%s: an error that is none of the ledger's: %v", call, err)
	}
}

// state sums up every table of the schema (row count and newest row
// version): it changes when a row is inserted, updated or deleted.
func (b fuzzBundle) state(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	rows, err := b.pool.Query(ctx, `SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	var state strings.Builder
	for _, table := range tables {
		var count, newest int64
		require.NoError(t, b.pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(max(xmin::text::bigint), 0) FROM %s`,
			pgx.Identifier{table}.Sanitize())).Scan(&count, &newest))
		fmt.Fprintf(&state, "%s:%d/%d ", table, count, newest)
	}
	return state.String()
}

func milliseconds(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

// FuzzReserve reserves random keys with random owners, fingerprints,
// metadata, lease TTLs and waits.
func FuzzReserve(f *testing.F) {
	b := setupFuzz(f)
	f.Add("ns", "k", "w", []byte("fp"), "run", "7", int64(1000), int64(0))
	f.Add("ns", "k", "w2", []byte("other"), "", "", int64(0), int64(10))
	f.Add("ns", "k\x00", "w", []byte{}, "\x00", "v", int64(-1), int64(-1))
	f.Add("n s", strings.Repeat("k", 513), strings.Repeat("w", 257), make([]byte, 257), strings.Repeat("m", 129), "\xff", int64(math.MaxInt64), int64(math.MinInt64))
	f.Add("-ns", "\xed\xa0\x80", "w\xc0", []byte(nil), "k", strings.Repeat("v", 9000), int64(5), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, namespace, key, owner string, fingerprint []byte, metaKey, metaValue string, ttl, wait int64) {
		var metadata map[string]string
		if metaKey != "" || metaValue != "" {
			metadata = map[string]string{metaKey: metaValue}
		}
		b.do(t, "reserve", func(ctx context.Context) error {
			_, err := b.store.Reserve(ctx, ledger.ReserveRequest{
				Namespace: namespace, Key: key, Owner: owner, Fingerprint: fingerprint, Metadata: metadata,
				LeaseTTL: milliseconds(ttl), WaitTimeout: milliseconds(wait),
			})
			return err
		})
	})
}

// FuzzLeaseCalls makes random Heartbeat, Complete, Fail and Release calls,
// after reserving the key (when it is valid) so that some tokens are
// current.
func FuzzLeaseCalls(f *testing.F) {
	b := setupFuzz(f)
	for op := range uint8(5) {
		f.Add(op, "ns", "k", int64(1), []byte("result"), "E42", "it broke", int64(1000))
		f.Add(op, "ns", "k", int64(2), []byte{}, "", "", int64(0))
		f.Add(op, "ns", "k\x00", int64(0), make([]byte, 70<<10), "\x00", "\xff", int64(-5))
		f.Add(op, "ns", "k", int64(math.MaxInt64), []byte(nil), strings.Repeat("c", 129), strings.Repeat("m", 8193), int64(math.MaxInt64))
	}
	f.Fuzz(func(t *testing.T, op uint8, namespace, key string, token int64, payload []byte, code, message string, ttl int64) {
		ctx := context.Background()
		_, _ = b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: namespace, Key: key, Owner: "fuzz"})
		switch op % 5 {
		case 0:
			b.do(t, "heartbeat", func(ctx context.Context) error {
				_, err := b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: namespace, Key: key, FencingToken: token, LeaseTTL: milliseconds(ttl), Checkpoint: payload})
				return err
			})
		case 1:
			b.do(t, "complete", func(ctx context.Context) error {
				_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: namespace, Key: key, FencingToken: token, Result: payload})
				return err
			})
		case 2, 3:
			b.do(t, "fail", func(ctx context.Context) error {
				_, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: namespace, Key: key, FencingToken: token,
					Error: &ledger.WorkError{Code: code, Message: message}, Retryable: op%5 == 3})
				return err
			})
		case 4:
			b.do(t, "release", func(ctx context.Context) error {
				_, err := b.store.Release(ctx, ledger.ReleaseRequest{Namespace: namespace, Key: key, FencingToken: token})
				return err
			})
		}
	})
}

// FuzzAdmin makes random lookups, listings, admin actions, namespace
// changes, tokens and role bindings.
func FuzzAdmin(f *testing.F) {
	b := setupFuzz(f)
	ctx := context.Background()
	_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(f, err)
	token := func(json string) string { return base64.RawURLEncoding.EncodeToString([]byte(json)) }
	for op := range uint8(adminOps) {
		f.Add(op, "ns", "k", "why", int64(10), int64(1))
		f.Add(op, "ns", "", "", int64(0), int64(0))
		f.Add(op, "ns", "k\x00", "\x00", int64(-1), int64(-1))
		f.Add(op, "ns*", strings.Repeat("k", 513), strings.Repeat("r", 1025), int64(math.MaxInt64), int64(math.MinInt64))
		f.Add(op, "ns", "k", token(`{"k":"\u0000","i":-1,"t":"0001-01-01T00:00:00Z"}`), int64(1001), int64(math.MaxInt64))
		f.Add(op, "ns", "\xff", token(`{"k":"k","i":9223372036854775807,"t":"9999-12-31T23:59:59Z"}`), int64(1<<40), int64(2))
	}
	f.Fuzz(func(t *testing.T, op uint8, namespace, key, text string, number, token int64) {
		page := ledger.Page{Size: int(number % 2000), Token: text}
		when := time.Unix(number, 0)
		duration := milliseconds(number)
		size := int(number)
		switch op % adminOps {
		case 0:
			b.do(t, "lookup", func(ctx context.Context) error { _, err := b.store.Lookup(ctx, namespace, key); return err })
		case 1:
			b.do(t, "history", func(ctx context.Context) error {
				_, _, err := b.store.GetHistory(ctx, namespace, key, page)
				return err
			})
		case 2:
			b.do(t, "list entries", func(ctx context.Context) error {
				_, _, err := b.store.ListEntries(ctx, ledger.EntryFilter{
					Namespace: namespace, KeyPrefix: key, Owner: text, States: []ledger.State{ledger.State(text)},
					UpdatedAfter: when, UpdatedBefore: time.Unix(token, 0), Stuck: number%2 == 0,
				}, ledger.Page{Size: int(token % 2000), Token: text})
				return err
			})
		case 3:
			b.do(t, "list events", func(ctx context.Context) error {
				_, err := b.store.ListEvents(ctx, ledger.EventFilter{
					Namespace: namespace, Start: when, End: time.Unix(token, 0), Kinds: []ledger.EventKind{ledger.EventKind(key)},
				}, page)
				return err
			})
		case 4:
			b.do(t, "force-release", func(ctx context.Context) error {
				_, _, err := b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: namespace, Key: key, Reason: text, FencingToken: token})
				return err
			})
		case 5:
			b.do(t, "reset", func(ctx context.Context) error {
				_, err := b.store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: namespace, Key: key, Reason: text, FencingToken: token})
				return err
			})
		case 6:
			b.do(t, "purge", func(ctx context.Context) error { _, err := b.store.PurgeExpired(ctx, namespace, text); return err })
		case 7:
			b.do(t, "namespaces", func(ctx context.Context) error {
				if _, err := b.store.GetNamespace(ctx, namespace); err != nil {
					return err
				}
				_, _, err := b.store.ListNamespaces(ctx, page)
				return err
			})
		case 8:
			b.do(t, "create namespace", func(ctx context.Context) error {
				_, err := b.store.CreateNamespace(ctx, namespace, ledger.NamespaceUpdate{
					DefaultLeaseTTL: &duration, MaxResultBytes: &size, Retention: &duration,
				}, text)
				return err
			})
		case 9:
			b.do(t, "update namespace", func(ctx context.Context) error {
				_, err := b.store.UpdateNamespace(ctx, namespace, ledger.NamespaceUpdate{
					MaxLeaseTTL: &duration, MaxAttempts: &size, EventRetention: &duration,
				}, text)
				return err
			})
		case 10:
			b.do(t, "tokens", func(ctx context.Context) error {
				created, _, err := b.store.CreateToken(ctx, key, text, duration, text)
				if err != nil {
					return err
				}
				_, err = b.store.RevokeToken(ctx, created.ID, text)
				return err
			})
		case 11:
			b.do(t, "revoke a token", func(ctx context.Context) error { _, err := b.store.RevokeToken(ctx, key, text); return err })
		case 12:
			binding := ledger.RoleBinding{Principal: key, NamespacePattern: namespace, Role: ledger.Role(text)}
			b.do(t, "grant", func(ctx context.Context) error { _, err := b.store.GrantRole(ctx, binding, text); return err })
			b.do(t, "revoke a role", func(ctx context.Context) error { return b.store.RevokeRole(ctx, binding, text) })
		}
	})
}

// adminOps is the number of operations FuzzAdmin chooses from.
const adminOps = 13
