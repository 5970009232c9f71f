package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

func TestReadDatabaseFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseServe(nil, nil)
	require.NoError(t, err)
	require.Empty(t, cfg.ReadDatabaseURL, "no read database: the primary serves the reads")
	require.Equal(t, int32(4), cfg.ReadDBMaxConns)

	cfg, err = parseServe([]string{"--read-db-max-conns", "2"}, map[string]string{
		"LEDGER_READ_DATABASE_URL": "postgres://a,b/ledger?target_session_attrs=prefer-standby",
		"LEDGER_READ_DB_MAX_CONNS": "8",
	})
	require.NoError(t, err)
	require.Equal(t, "postgres://a,b/ledger?target_session_attrs=prefer-standby", cfg.ReadDatabaseURL)
	require.Equal(t, int32(2), cfg.ReadDBMaxConns, "a flag beats its environment variable")

	for _, bad := range []string{"0", "1001"} {
		_, err := parseServe([]string{"--read-db-max-conns", bad}, nil)
		require.ErrorContains(t, err, "--read-db-max-conns must be between 1 and 1000")
	}
	var stderr ledgertest.LogBuffer
	_, err = parseConfig("migrate", []string{"--database-url", "postgres://x/y", "--read-database-url", "postgres://z/y"}, env(nil), &stderr)
	require.ErrorContains(t, err, "flag provided but not defined: -read-database-url", "only serve reads")
}

// TestReadDatabaseURLThatIsNotOne: a --read-database-url that is not a URL
// fails `ledgerd serve` at once, without quoting its password.
func TestReadDatabaseURLThatIsNotOne(t *testing.T) {
	t.Parallel()
	var stdout, stderr ledgertest.LogBuffer
	err := run(context.Background(), []string{"serve", "--database-url", pgtest.Schema(t),
		"--read-database-url", "postgres://u:secret@db:notaport/ledger", "--listen-addr", "127.0.0.1:0", "--http-addr", "off"},
		env(nil), &stdout, &stderr)
	require.ErrorContains(t, err, "--read-database-url is not a valid PostgreSQL URL or DSN")
	require.NotContains(t, err.Error()+stdout.String()+stderr.String(), "secret")
}

// TestReadPoolSessionSettings: the read pool's sessions get the serving
// sessions' statement timeout, an application_name of their own (they
// may be cancelled, unlike the primary's), the read pool's size and
// connect timeout.
func TestReadPoolSessionSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := parseServe([]string{"--read-database-url", pgtest.URL(t), "--db-statement-timeout", "7s", "--read-db-max-conns", "3"}, nil)
	require.NoError(t, err)
	pool, err := newPool(ctx, cfg, forReads)
	require.NoError(t, err)
	defer pool.Close()
	var statement, applicationName string
	require.NoError(t, pool.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('application_name')").Scan(&statement, &applicationName))
	require.Equal(t, "7s", statement)
	require.Equal(t, "ledgerd-reads", applicationName)
	require.Equal(t, int32(3), pool.Config().MaxConns)
	require.Equal(t, ledger.DefaultReadConnectTimeout, pool.Config().ConnConfig.ConnectTimeout)
}

// TestServeWithReadDatabase: with --read-database-url, ListEntries,
// GetHistory and ListEvents are answered from that database, while the
// writes and Lookup go to --database-url. The read database here is a
// schema of its own that holds another key, which tells the answers apart;
// in production it is a hot standby of the primary.
func TestServeWithReadDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	readURL := pgtest.Schema(t)
	standby := ledgertest.StoreAt(t, readURL, ledger.Config{})
	reserveAndComplete(t, standby.Store, "ns", "on-standby")
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_READ_DATABASE_URL": readURL})
	require.Contains(t, d.stdout.String(), `"read_database":true`)
	conn := dial(t, d.grpcAddr)
	client, admin := ledgerv1.NewLedgerServiceClient(conn), ledgerv1.NewLedgerAdminServiceClient(conn)
	_, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "on-primary", Owner: "w"})
	require.NoError(t, err)

	entries, err := admin.ListEntries(ctx, &ledgerv1.ListEntriesRequest{Namespace: "ns"})
	require.NoError(t, err)
	require.Len(t, entries.GetEntries(), 1)
	require.Equal(t, "on-standby", entries.GetEntries()[0].GetKey())
	history, err := admin.GetHistory(ctx, &ledgerv1.GetHistoryRequest{Namespace: "ns", Key: "on-standby"})
	require.NoError(t, err)
	require.Len(t, history.GetEvents(), 2)
	events, err := admin.ListEvents(ctx, &ledgerv1.ListEventsRequest{Namespace: "ns", IncludeUnsettled: true,
		Kinds: []ledgerv1.EventKind{ledgerv1.EventKind_EVENT_KIND_RESERVED}})
	require.NoError(t, err)
	require.Len(t, events.GetEvents(), 1)
	require.Equal(t, "on-standby", events.GetEvents()[0].GetKey())

	lookup, err := client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "on-primary"})
	require.NoError(t, err)
	require.Equal(t, ledgerv1.State_STATE_LEASED, lookup.GetEntry().GetState(), "Lookup reads the primary")
	require.NoError(t, d.stop())
}

// TestServeWithUnreachableReadDatabase: a read database that cannot be
// reached stops nothing: ledgerd serves, writes, and answers the reads
// from the primary, saying so once in its log.
func TestServeWithUnreachableReadDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	unreachable := fmt.Sprintf("postgres://postgres@%s/ledger?sslmode=disable", lis.Addr())
	require.NoError(t, lis.Close()) // nothing listens there now
	d := startDaemon(t, map[string]string{"LEDGER_DATABASE_URL": pgtest.Schema(t), "LEDGER_READ_DATABASE_URL": unreachable})
	conn := dial(t, d.grpcAddr)
	client, admin := ledgerv1.NewLedgerServiceClient(conn), ledgerv1.NewLedgerAdminServiceClient(conn)
	_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	for range 2 {
		entries, err := admin.ListEntries(ctx, &ledgerv1.ListEntriesRequest{Namespace: "ns"})
		require.NoError(t, err)
		require.Len(t, entries.GetEntries(), 1)
		history, err := admin.GetHistory(ctx, &ledgerv1.GetHistoryRequest{Namespace: "ns", Key: "k"})
		require.NoError(t, err)
		require.Len(t, history.GetEvents(), 1)
		_, err = admin.ListEvents(ctx, &ledgerv1.ListEventsRequest{Namespace: "ns"})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return countLines(d.stdout.String(), `"msg":"read database unreachable`) == 1
	}, time.Minute, 20*time.Millisecond, d.stdout.String())
	require.NoError(t, d.stop())
}

// reserveAndComplete reserves and completes a key through a Store.
func reserveAndComplete(t *testing.T, store *ledger.Store, namespace, key string) {
	t.Helper()
	ctx := context.Background()
	r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: namespace, Key: key, Owner: "w", LeaseTTL: time.Minute})
	require.NoError(t, err)
	_, err = store.Complete(ctx, ledger.CompleteRequest{Namespace: namespace, Key: key, FencingToken: r.FencingToken, Result: []byte("r")})
	require.NoError(t, err)
}

// countLines counts the lines of s that contain substr.
func countLines(s, substr string) int {
	n := 0
	for line := range strings.Lines(s) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}
