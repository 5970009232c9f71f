package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

// schemaOf returns the search_path parameter of a URL returned by Schema.
func schemaOf(t *testing.T, u string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	require.NoError(t, err)
	name := parsed.Query().Get("search_path")
	require.Regexp(t, `^t_[0-9a-f]{16}$`, name)
	return name
}

func connect(t *testing.T, u string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// schemaExists reports whether schema exists, asked over the base URL.
func schemaExists(t *testing.T, schema string) bool {
	t.Helper()
	var exists bool
	err := connect(t, URL(t)).QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists)
	require.NoError(t, err)
	return exists
}

func TestURL(t *testing.T) {
	var one int
	require.NoError(t, connect(t, URL(t)).QueryRow(context.Background(), "SELECT 1").Scan(&one))
	require.Equal(t, 1, one)
}

func TestSchemaSetsSearchPath(t *testing.T) {
	u := Schema(t)
	name := schemaOf(t, u)
	conn := connect(t, u)
	ctx := context.Background()

	var current, searchPath string
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_schema(), current_setting('search_path')").
		Scan(&current, &searchPath))
	require.Equal(t, name, current)
	require.Equal(t, name, searchPath)

	// Unqualified DDL lands in the schema.
	_, err := conn.Exec(ctx, "CREATE TABLE probe (id int)")
	require.NoError(t, err)
	var tableSchema string
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe'").Scan(&tableSchema))
	require.Equal(t, name, tableSchema)
}

func TestSchemasDiffer(t *testing.T) {
	a, b := schemaOf(t, Schema(t)), schemaOf(t, Schema(t))
	require.NotEqual(t, a, b)
	require.True(t, schemaExists(t, a))
	require.True(t, schemaExists(t, b))
}

func TestSchemaDroppedInCleanup(t *testing.T) {
	var name string
	t.Run("owner", func(t *testing.T) {
		pool := Pool(t) // closed in cleanup before the drop; tables must not block it
		name = schemaOf(t, pool.Config().ConnString())
		_, err := pool.Exec(context.Background(), "CREATE TABLE t (id int PRIMARY KEY)")
		require.NoError(t, err)
		require.True(t, schemaExists(t, name))
	})
	// t.Run returns after the sub-test's cleanups ran.
	require.NotEmpty(t, name)
	require.False(t, schemaExists(t, name), "schema %s survived its test", name)
}

func TestDropSchemaIdempotent(t *testing.T) {
	name, err := newSchemaName()
	require.NoError(t, err)
	require.NoError(t, dropSchema(URL(t), name))
}

// TestParallelPools checks that parallel tests get isolated schemas: each
// creates the same table name and sees only its own row.
func TestParallelPools(t *testing.T) {
	for i := range 16 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			pool := Pool(t)
			ctx := context.Background()
			_, err := pool.Exec(ctx, "CREATE TABLE items (n int)")
			require.NoError(t, err)
			_, err = pool.Exec(ctx, "INSERT INTO items VALUES ($1)", i)
			require.NoError(t, err)
			var count, n int
			require.NoError(t, pool.QueryRow(ctx, "SELECT count(*), max(n) FROM items").Scan(&count, &n))
			require.Equal(t, 1, count)
			require.Equal(t, i, n)
		})
	}
}

func TestWithSearchPath(t *testing.T) {
	got, err := withSearchPath("postgres://u:secret@127.0.0.1:5432/db?sslmode=disable&search_path=old", "t_1")
	require.NoError(t, err)
	parsed, err := url.Parse(got)
	require.NoError(t, err)
	require.Equal(t, "t_1", parsed.Query().Get("search_path"))
	require.Equal(t, "disable", parsed.Query().Get("sslmode"))

	_, err = withSearchPath("host=127.0.0.1 dbname=db", "t_1")
	require.Error(t, err)
}
