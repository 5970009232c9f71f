package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/server"
)

func TestGRPCLimitFlags(t *testing.T) {
	t.Parallel()
	var stderr ledgertest.LogBuffer
	database := []string{"--database-url", "postgres://x/y"}
	cfg, err := parseConfig("serve", database, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, server.Limits{
		MaxConcurrentStreams: 1000,
		MaxHeaderListBytes:   1 << 20,
		KeepaliveMinTime:     10 * time.Second,
		KeepaliveTime:        time.Minute,
		KeepaliveTimeout:     20 * time.Second,
		MaxConnectionIdle:    15 * time.Minute,
		MaxConnectionAge:     30 * time.Minute,
		ConnectionTimeout:    10 * time.Second,
		RequestReadTimeout:   time.Minute,
		MaxPendingRequests:   10000,
	}, cfg.GRPC, "the defaults; the message sizes and the age grace are derived by server.New")
	require.Equal(t, 30*time.Second, cfg.DBStatementTimeout)
	require.Equal(t, 10*time.Second, cfg.DBIdleInTransactionTimeout)

	cfg, err = parseConfig("serve", append(database, "--grpc-max-connection-age", "0", "--grpc-keepalive-permit-without-calls=false"),
		env(map[string]string{"LEDGER_GRPC_MAX_CONNECTION_IDLE": "0", "LEDGER_GRPC_MAX_CONCURRENT_STREAMS": "8", "LEDGER_GRPC_MAX_SEND_MSG_BYTES": "1000000"}), &stderr)
	require.NoError(t, err)
	require.Negative(t, cfg.GRPC.MaxConnectionAge, "0 turns it off")
	require.Negative(t, cfg.GRPC.MaxConnectionIdle, "0 turns it off")
	require.True(t, cfg.GRPC.RefuseIdlePings)
	require.Equal(t, uint32(8), cfg.GRPC.MaxConcurrentStreams)
	require.Equal(t, 1000000, cfg.GRPC.MaxSendMsgBytes)

	for _, bad := range [][]string{
		{"--grpc-keepalive-time", "500ms"},
		{"--grpc-keepalive-min-time", "0"},
		{"--grpc-keepalive-timeout", "-1s"},
		{"--grpc-connection-timeout", "0"},
		{"--grpc-max-connection-age", "-1m"},
		{"--grpc-max-concurrent-streams", "0"},
		{"--grpc-max-header-bytes", "100"},
		{"--grpc-max-send-msg-bytes", "-1"},
		{"--db-statement-timeout", "500us"},
		{"--db-idle-in-transaction-timeout", "10us"},
	} {
		_, err := parseConfig("serve", append(database, bad...), env(nil), &stderr)
		require.ErrorContains(t, err, bad[0], "%v", bad)
	}
}

// TestDatabaseSessionSettings: ledgerd's sessions get the statement and
// idle-in-transaction timeouts of the flags, unless the DSN sets them; the
// migrations' sessions have no statement timeout.
func TestDatabaseSessionSettings(t *testing.T) {
	t.Parallel()
	base := pgtest.URL(t)
	for _, tc := range []struct {
		name                 string
		query                string // added to the URL
		flags                []string
		purpose              poolPurpose
		statement, idleInTxn string
	}{
		{"defaults", "", nil, forServing, "30s", "10s"},
		{"migrations", "", nil, forMigrations, "0", "10s"},
		{"flags", "", []string{"--db-statement-timeout", "2s", "--db-idle-in-transaction-timeout", "0"}, forServing, "2s", "0"},
		{"the database's own", "", []string{"--db-statement-timeout", "-1s", "--db-idle-in-transaction-timeout", "-1s"}, forServing, "0", "0"},
		{"DSN parameter", "&statement_timeout=5000", nil, forServing, "5s", "10s"},
		{"DSN parameter for migrations", "&statement_timeout=5000", nil, forMigrations, "5s", "10s"},
		{"DSN options", "&options=" + strings.ReplaceAll(url.QueryEscape("-c statement_timeout=7s -c idle_in_transaction_session_timeout=3s"), "+", "%20"), nil, forServing, "7s", "3s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr ledgertest.LogBuffer
			cfg, err := parseConfig("migrate", append([]string{"--database-url", base + tc.query}, tc.flags...), env(nil), &stderr)
			require.NoError(t, err)
			pool, err := openPool(context.Background(), cfg, tc.purpose)
			require.NoError(t, err)
			defer pool.Close()
			var statement, idleInTxn string
			require.NoError(t, pool.QueryRow(context.Background(), "SHOW statement_timeout").Scan(&statement))
			require.NoError(t, pool.QueryRow(context.Background(), "SHOW idle_in_transaction_session_timeout").Scan(&idleInTxn))
			require.Equal(t, tc.statement, statement)
			require.Equal(t, tc.idleInTxn, idleInTxn)
		})
	}
}

// TestIsolationLeastPrivilegeRoles sets up the two roles as the operator's guide
// says (its SQL, run as it is written), migrates and bootstraps as the
// owner, and serves as the serving role with authentication on: every kind
// of call works (reserve, complete, waits woken by LISTEN, listings, admin
// actions, tokens, role bindings, the sweeper's retention), while the
// serving role cannot UPDATE audit events, TRUNCATE or change the schema.
func TestIsolationLeastPrivilegeRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	setup, grants := rolesSQL(t)
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	owner, app, schema := "t_owner_"+hex.EncodeToString(suffix[:]), "t_app_"+hex.EncodeToString(suffix[:]), "t_ledgerd_"+hex.EncodeToString(suffix[:])
	rename := strings.NewReplacer("ledgerd_owner", owner, "ledgerd_app", app)
	named := func(sql string) string {
		return regexp.MustCompile(`\bledgerd\b`).ReplaceAllString(rename.Replace(sql), schema)
	}
	superuser := pgtest.URL(t)
	t.Cleanup(func() {
		execSQL(t, superuser, "DROP SCHEMA IF EXISTS "+schema+" CASCADE; DROP OWNED BY "+app+"; DROP ROLE IF EXISTS "+app+"; DROP ROLE IF EXISTS "+owner)
	})
	execSQL(t, superuser, named(setup))
	ownerURL, appURL := asRole(t, superuser, owner), asRole(t, superuser, app)

	var out, errOut ledgertest.LogBuffer
	require.NoError(t, run(ctx, []string{"migrate", "--database-url", ownerURL}, env(nil), &out, &errOut), "%s%s", out.String(), errOut.String())
	execSQL(t, ownerURL, named(grants))
	require.NoError(t, run(ctx, []string{"bootstrap", "--principal", "root", "--database-url", ownerURL, "--log-format", "json"}, env(nil), &out, &errOut), errOut.String())
	token := regexp.MustCompile(`ldg_[0-9a-f]+_[A-Za-z0-9_-]+`).FindString(out.String())
	require.NotEmpty(t, token, out.String())

	// Every table of the schema is covered by the grants.
	conn, err := pgx.Connect(ctx, appURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT has_table_privilege(c.oid, 'SELECT')`, schema)
	require.NoError(t, err)
	ungranted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Empty(t, ungranted, "tables the serving role may not read: add them to the grants in docs/security.md")

	d := startDaemon(t, map[string]string{
		"LEDGER_DATABASE_URL": appURL, "LEDGER_NO_MIGRATE": "true", "LEDGER_INSECURE_DEV": "false",
		"LEDGER_SWEEP_INTERVAL": "100ms", "LEDGER_MIN_LEASE_TTL": "10ms", "LEDGER_MIN_EVENT_RETENTION": "1ms",
	})
	grpcConn, err := grpc.NewClient(d.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer grpcConn.Close()
	rpcCtx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), time.Minute)
	defer cancel()
	client, admin := ledgerv1.NewLedgerServiceClient(grpcConn), ledgerv1.NewLedgerAdminServiceClient(grpcConn)

	// A secure ledgerd does not create namespaces on first use.
	_, err = client.Reserve(rpcCtx, &ledgerv1.ReserveRequest{Namespace: "roles", Key: "a", Owner: "w1"})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	_, err = admin.CreateNamespace(rpcCtx, &ledgerv1.CreateNamespaceRequest{Name: "roles", Reason: "test"})
	require.NoError(t, err)
	res, err := client.Reserve(rpcCtx, &ledgerv1.ReserveRequest{Namespace: "roles", Key: "a", Owner: "w1", Metadata: map[string]string{"run": "1"}})
	require.NoError(t, err)
	require.NotNil(t, res.GetAcquired(), "%v", res)
	waited := make(chan *ledgerv1.ReserveResponse, 1)
	go func() {
		res, err := client.Reserve(rpcCtx, &ledgerv1.ReserveRequest{Namespace: "roles", Key: "a", Owner: "w2", WaitTimeout: durationpb.New(30 * time.Second)})
		if err != nil {
			t.Errorf("waiting reserve: %v", err)
		}
		waited <- res
	}()
	time.Sleep(100 * time.Millisecond) // let it wait: it must be woken, not time out
	_, err = client.Heartbeat(rpcCtx, &ledgerv1.HeartbeatRequest{Namespace: "roles", Key: "a", FencingToken: 1, Checkpoint: []byte("half")})
	require.NoError(t, err)
	_, err = client.Complete(rpcCtx, &ledgerv1.CompleteRequest{Namespace: "roles", Key: "a", FencingToken: 1, Result: []byte("r")})
	require.NoError(t, err)
	select {
	case res := <-waited:
		require.NotNil(t, res.GetCompleted(), "the waiter is woken by the completion: %v", res)
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting Reserve was not woken")
	}
	for _, key := range []string{"b", "c"} {
		_, err = client.Reserve(rpcCtx, &ledgerv1.ReserveRequest{Namespace: "roles", Key: key, Owner: "w1"})
		require.NoError(t, err)
	}
	_, err = client.Fail(rpcCtx, &ledgerv1.FailRequest{Namespace: "roles", Key: "b", FencingToken: 1, Error: &ledgerv1.WorkError{Message: "no"}, Retryable: true})
	require.NoError(t, err)
	_, err = client.Release(rpcCtx, &ledgerv1.ReleaseRequest{Namespace: "roles", Key: "c", FencingToken: 1})
	require.NoError(t, err)
	_, err = client.Lookup(rpcCtx, &ledgerv1.LookupRequest{Namespace: "roles", Key: "a", IncludeHistory: true})
	require.NoError(t, err)
	_, err = admin.ListEntries(rpcCtx, &ledgerv1.ListEntriesRequest{Namespace: "roles", PageSize: 1})
	require.NoError(t, err)
	_, err = admin.ListEvents(rpcCtx, &ledgerv1.ListEventsRequest{Namespace: "roles"})
	require.NoError(t, err)
	_, err = admin.GetHistory(rpcCtx, &ledgerv1.GetHistoryRequest{Namespace: "roles", Key: "a"})
	require.NoError(t, err)
	_, err = client.Reserve(rpcCtx, &ledgerv1.ReserveRequest{Namespace: "roles", Key: "d", Owner: "w1"})
	require.NoError(t, err)
	_, err = admin.ForceRelease(rpcCtx, &ledgerv1.ForceReleaseRequest{Namespace: "roles", Key: "d", Reason: "test"})
	require.NoError(t, err)
	_, err = admin.ResetKey(rpcCtx, &ledgerv1.ResetKeyRequest{Namespace: "roles", Key: "d", Reason: "test"})
	require.NoError(t, err)
	created, err := admin.CreateToken(rpcCtx, &ledgerv1.CreateTokenRequest{Principal: "svc", Reason: "test"})
	require.NoError(t, err)
	_, err = admin.RevokeToken(rpcCtx, &ledgerv1.RevokeTokenRequest{Id: created.GetToken().GetId(), Reason: "test"})
	require.NoError(t, err)
	binding := &ledgerv1.RoleBinding{Principal: "svc", NamespacePattern: "roles", Role: ledgerv1.Role_ROLE_WORKER}
	_, err = admin.GrantRole(rpcCtx, &ledgerv1.GrantRoleRequest{Binding: binding, Reason: "test"})
	require.NoError(t, err)
	_, err = admin.RevokeRole(rpcCtx, &ledgerv1.RevokeRoleRequest{Binding: binding, Reason: "test"})
	require.NoError(t, err)

	// Retention: the sweeper (every 100ms) purges the finished keys and
	// deletes the expired events.
	_, err = admin.UpdateNamespace(rpcCtx, &ledgerv1.UpdateNamespaceRequest{Name: "roles", Reason: "test", Settings: &ledgerv1.NamespaceSettings{
		Retention: durationpb.New(time.Millisecond), EventRetention: durationpb.New(time.Millisecond),
	}})
	require.NoError(t, err)
	_, err = admin.PurgeExpired(rpcCtx, &ledgerv1.PurgeExpiredRequest{Namespace: "roles", Reason: "test"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return regexp.MustCompile(`"msg":"swept".*"deleted_events":[1-9]`).MatchString(d.stdout.String())
	}, 20*time.Second, 50*time.Millisecond, "the sweeper deletes expired events: %s", d.stdout)
	require.NotContains(t, d.stdout.String(), "sweep failed")
	require.NotContains(t, d.stdout.String(), `"level":"ERROR"`)

	// What the serving role may not do.
	for _, sql := range []string{
		`UPDATE events SET owner = 'forged'`,
		`TRUNCATE events`,
		`TRUNCATE entries`,
		`UPDATE ledgerd_migrations SET is_applied = false`,
		`CREATE TABLE extra (id int)`,
		`ALTER TABLE entries ADD COLUMN extra int`,
		`DROP TRIGGER events_append_only ON events`,
	} {
		_, err := conn.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, sql)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code, "%s: %v", sql, err)
		require.NotContains(t, pgErr.Message, "append-only", "%s: refused by privilege, not by the trigger", sql)
	}
	require.NoError(t, d.stop())
}

// rolesSQL returns the two SQL blocks of the operator's guide's
// least-privilege roles: the setup a superuser runs, and the grants.
func rolesSQL(t *testing.T) (setup, grants string) {
	t.Helper()
	guide, err := os.ReadFile("../../docs/security.md")
	require.NoError(t, err)
	_, section, found := strings.Cut(string(guide), "**Least-privilege database roles.**")
	require.True(t, found, "the section of the guide")
	blocks := regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(section, 2)
	require.Len(t, blocks, 2)
	return blocks[0][1], blocks[1][1]
}

// asRole returns base, connecting as role (the test cluster trusts local
// connections), without a search_path: the role's own applies.
func asRole(t *testing.T, base, role string) string {
	t.Helper()
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.User = url.User(role)
	query := u.Query()
	query.Del("search_path")
	u.RawQuery = query.Encode()
	return u.String()
}

// execSQL runs statements, separated by semicolons, on a connection of its
// own.
func execSQL(t *testing.T, databaseURL, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.PgConn().Exec(ctx, sql).ReadAll()
	require.NoError(t, err, sql)
}
