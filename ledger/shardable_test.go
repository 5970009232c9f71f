package ledger_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// The schema is kept shardable by namespace: every table is classified as
// it would be on a distributed PostgreSQL (Citus) whose shards are chosen by
// namespace, and the catalog of the migrated schema is checked against the
// rules such a database imposes. docs/scaling.md, "Sharding", explains the
// classification, the rules and the exceptions; keep the two lists below
// and that page in step (TestScalingDocMatchesShardingRules checks it).

// tableClass is where a table would live on a database sharded by namespace.
type tableClass string

const (
	// distributed tables are split into shards by a namespace column, and
	// co-located: the rows of one namespace, in every distributed table,
	// live on the same node.
	distributed tableClass = "distributed"
	// reference tables are small and global: a copy on every node.
	reference tableClass = "reference"
	// local tables stay on the coordinator only.
	local tableClass = "local"
)

// tableRule classifies one table.
type tableRule struct {
	class tableClass
	// column is a distributed table's distribution column: the namespace.
	column string
}

// shardingRules classifies every table of the schema.
var shardingRules = map[string]tableRule{
	"entries":            {class: distributed, column: "namespace"},
	"events":             {class: distributed, column: "namespace"},
	"namespaces":         {class: distributed, column: "name"},
	"namespace_usage":    {class: distributed, column: "namespace"},
	"api_tokens":         {class: reference},
	"role_bindings":      {class: reference},
	"ledgerd_migrations": {class: local},
	// One row each. The epoch is read by every grant, on every node; the
	// compatibility at start-up only.
	"fencing_epoch":         {class: reference},
	"ledgerd_schema_compat": {class: local},
}

// shardingExceptions are the findings the schema has today, each with the
// reason it is tolerated, keyed by finding id. docs/scaling.md names each
// one (by the object in backquotes) and says what would have to change. A
// new finding fails TestSchemaIsShardable; so does an exception that no
// longer occurs, so that this list stays true.
var shardingExceptions = map[string]string{
	"unique:events.events_pkey": "the audit trail's primary key is its identity id alone; " +
		"sharded, it becomes (namespace, id), which id's uniqueness allows",
	"sequence:events.id": "orders the audit trail: a key's history and ListEvents page by it, and a Reserve " +
		"finds a purged key's last token through it; sharded, ids stay unique but not ordered across nodes",
	"sequence:ledgerd_migrations.id": "goose's record of applied migrations, on the coordinator only",
	"trigger:entries.entries_wake_waiters": "NOTIFY wakes waiting Reserves; on a shard it would notify " +
		"listeners of the shard's node only",
	"trigger:events.events_append_only": "refuses UPDATE of events; it would run on each shard, harmlessly",
}

// shardingFinding is a way the schema breaks a sharding rule.
type shardingFinding struct {
	// id names the finding and the object: "kind:table.object".
	id string
	// advice says what is wrong and what to do.
	advice string
}

// rowQuerier runs a catalog query: a pool or a connection.
type rowQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// shardingFindings reads the catalog of the current schema (the first of
// the search_path) and returns, sorted by id, every way it breaks the rules
// for the tables classified by rules:
//
//   - a table without a classification;
//   - a distributed table without its distribution column, or with one that
//     may be NULL;
//   - a primary key, unique index or exclusion constraint of a distributed
//     table whose key columns do not include the distribution column;
//   - a foreign key between distributed tables that does not pair their
//     distribution columns, one from a reference table to a distributed one,
//     or one between a local table and another class;
//   - a column filled by a sequence (identity, serial, nextval) and a
//     sequence owned by no column: values from one counter shared by every
//     row, which a sharded database can keep unique but not ordered;
//   - a trigger, which would run on the node of each shard.
func shardingFindings(ctx context.Context, db rowQuerier, rules map[string]tableRule) ([]shardingFinding, error) {
	var findings []shardingFinding
	add := func(id, format string, args ...any) {
		findings = append(findings, shardingFinding{id: id, advice: fmt.Sprintf(format, args...)})
	}

	type column struct {
		Table   string `db:"table_name"`
		Column  string `db:"column_name"`
		NotNull bool   `db:"not_null"`
	}
	columns, err := collect[column](ctx, db, `
		SELECT t.relname::text AS table_name, a.attname::text AS column_name, a.attnotnull AS not_null
		FROM pg_class t
		JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE t.relnamespace = current_schema()::regnamespace AND t.relkind IN ('r', 'p') AND NOT t.relispartition`)
	if err != nil {
		return nil, fmt.Errorf("read columns: %w", err)
	}
	tables := map[string]map[string]bool{} // table -> column -> NOT NULL
	for _, c := range columns {
		if tables[c.Table] == nil {
			tables[c.Table] = map[string]bool{}
		}
		tables[c.Table][c.Column] = c.NotNull
	}
	for table, cols := range tables {
		rule, ok := rules[table]
		switch {
		case !ok:
			add("unclassified:"+table, "table %s is not classified for sharding: add it to shardingRules in "+
				"ledger/shardable_test.go and to the table classification in docs/scaling.md "+
				"(distributed by its namespace column, reference or local)", table)
		case rule.class != distributed:
		case !hasColumn(cols, rule.column):
			add("column:"+table, "distributed table %s has no distribution column %s", table, rule.column)
		case !cols[rule.column]:
			add("column:"+table, "the distribution column %s.%s may be NULL: make it NOT NULL", table, rule.column)
		}
	}

	type uniqueIndex struct {
		Table   string   `db:"table_name"`
		Index   string   `db:"index_name"`
		Columns []string `db:"key_columns"`
	}
	uniques, err := collect[uniqueIndex](ctx, db, `
		SELECT t.relname::text AS table_name, i.relname::text AS index_name,
		       ARRAY(SELECT a.attname::text
		             FROM unnest(x.indkey[0:x.indnkeyatts - 1]) WITH ORDINALITY AS k (attnum, n)
		             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
		             ORDER BY k.n) AS key_columns
		FROM pg_index x
		JOIN pg_class i ON i.oid = x.indexrelid
		JOIN pg_class t ON t.oid = x.indrelid
		WHERE t.relnamespace = current_schema()::regnamespace AND (x.indisunique OR x.indisexclusion)`)
	if err != nil {
		return nil, fmt.Errorf("read unique indexes: %w", err)
	}
	for _, u := range uniques {
		rule, ok := rules[u.Table]
		if ok && rule.class == distributed && !slices.Contains(u.Columns, rule.column) {
			add("unique:"+u.Table+"."+u.Index, "%s on %s (%s) lacks the distribution column %s: "+
				"a shard can only enforce uniqueness that includes it", u.Index, u.Table,
				strings.Join(u.Columns, ", "), rule.column)
		}
	}

	type foreignKey struct {
		Name           string   `db:"constraint_name"`
		Table          string   `db:"table_name"`
		Referenced     string   `db:"referenced_table"`
		Columns        []string `db:"key_columns"`
		ReferencedCols []string `db:"referenced_columns"`
	}
	foreignKeys, err := collect[foreignKey](ctx, db, `
		SELECT c.conname::text AS constraint_name, t.relname::text AS table_name,
		       f.relname::text AS referenced_table,
		       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k (attnum, n)
		             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.n) AS key_columns,
		       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k (attnum, n)
		             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.n) AS referenced_columns
		FROM pg_constraint c
		JOIN pg_class t ON t.oid = c.conrelid
		JOIN pg_class f ON f.oid = c.confrelid
		WHERE c.contype = 'f' AND t.relnamespace = current_schema()::regnamespace`)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys: %w", err)
	}
	for _, fk := range foreignKeys {
		from, fromOK := rules[fk.Table]
		to, toOK := rules[fk.Referenced]
		id := "foreign-key:" + fk.Table + "." + fk.Name
		switch {
		case !fromOK || !toOK:
			// The unclassified table is reported already.
		case from.class == distributed && to.class == distributed:
			paired := false
			for i := range fk.Columns {
				paired = paired || (fk.Columns[i] == from.column && fk.ReferencedCols[i] == to.column)
			}
			if !paired {
				add(id, "%s from %s to %s does not pair the distribution columns %s and %s: "+
					"co-located shards can only check keys that do", fk.Name, fk.Table, fk.Referenced, from.column, to.column)
			}
		case from.class == reference && to.class == distributed:
			add(id, "%s from reference table %s to distributed table %s: a copy on every node cannot "+
				"reference rows that live on one", fk.Name, fk.Table, fk.Referenced)
		case (from.class == local) != (to.class == local):
			add(id, "%s joins local table and a table of another class (%s to %s)", fk.Name, fk.Table, fk.Referenced)
		}
	}

	type sequenceUse struct {
		Name string `db:"name"`
	}
	sequences, err := collect[sequenceUse](ctx, db, `
		SELECT t.relname::text || '.' || a.attname::text AS name
		FROM pg_class t
		JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE t.relnamespace = current_schema()::regnamespace AND t.relkind IN ('r', 'p')
		  AND (a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) LIKE '%nextval(%')
		UNION ALL
		SELECT s.relname::text
		FROM pg_class s
		WHERE s.relnamespace = current_schema()::regnamespace AND s.relkind = 'S'
		  AND NOT EXISTS (SELECT FROM pg_depend d
		                  WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid
		                    AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
		                    AND d.deptype IN ('a', 'i'))`)
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	for _, s := range sequences {
		add("sequence:"+s.Name, "%s takes its values from a sequence, one counter for all rows: a sharded "+
			"database keeps such values unique, not ordered; order by a per-key or per-namespace value instead, "+
			"or record the exception with its reason", s.Name)
	}

	type trigger struct {
		Table string `db:"table_name"`
		Name  string `db:"trigger_name"`
	}
	triggers, err := collect[trigger](ctx, db, `
		SELECT t.relname::text AS table_name, g.tgname::text AS trigger_name
		FROM pg_trigger g
		JOIN pg_class t ON t.oid = g.tgrelid
		WHERE NOT g.tgisinternal AND t.relnamespace = current_schema()::regnamespace`)
	if err != nil {
		return nil, fmt.Errorf("read triggers: %w", err)
	}
	for _, tg := range triggers {
		add("trigger:"+tg.Table+"."+tg.Name, "trigger %s on %s would run on the node of each shard "+
			"(Citus runs such triggers only with citus.enable_unsafe_triggers): make sure that is what it needs", tg.Name, tg.Table)
	}

	sort.Slice(findings, func(i, j int) bool { return findings[i].id < findings[j].id })
	return findings, nil
}

// hasColumn reports whether a table's columns include name.
func hasColumn(columns map[string]bool, name string) bool {
	_, ok := columns[name]
	return ok
}

// collect runs a catalog query and scans its rows by column name.
func collect[T any](ctx context.Context, db rowQuerier, sql string) ([]T, error) {
	rows, err := db.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[T])
}

func findingIDs(findings []shardingFinding) []string {
	ids := make([]string, len(findings))
	for i, f := range findings {
		ids[i] = f.id
	}
	return ids
}

// TestSchemaIsShardable checks the migrated schema against the sharding
// rules: every finding must be a known exception, and every exception must
// still be found.
func TestSchemaIsShardable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	_, err := ledger.Migrate(ctx, pool, nil)
	require.NoError(t, err)

	findings, err := shardingFindings(ctx, pool, shardingRules)
	require.NoError(t, err)
	for _, f := range findings {
		if _, known := shardingExceptions[f.id]; !known {
			t.Errorf("%s: %s (docs/scaling.md, \"Sharding\")", f.id, f.advice)
		}
	}
	found := findingIDs(findings)
	for id := range shardingExceptions {
		if !slices.Contains(found, id) {
			t.Errorf("%s no longer occurs: remove it from shardingExceptions in ledger/shardable_test.go "+
				"and from docs/scaling.md", id)
		}
	}
}

// TestShardingFindingsCatchViolations keeps the checker honest: each case
// builds tables in a scratch schema, and the checker must report exactly
// the violations they were made with (and nothing for a compliant schema).
func TestShardingFindingsCatchViolations(t *testing.T) {
	t.Parallel()
	tenants := `CREATE TABLE tenants (name text PRIMARY KEY);`
	items := tenants + `
		CREATE TABLE items (namespace text NOT NULL REFERENCES tenants (name), key text NOT NULL,
		                    PRIMARY KEY (namespace, key));`
	rules := map[string]tableRule{
		"tenants":  {class: distributed, column: "name"},
		"items":    {class: distributed, column: "namespace"},
		"settings": {class: reference},
		"history":  {class: local},
	}
	for _, tc := range []struct {
		name string
		ddl  string
		want []string
	}{
		{
			name: "compliant",
			ddl: items + `
				CREATE UNIQUE INDEX items_key_ns_idx ON items (key, namespace) WHERE key <> '';
				CREATE TABLE settings (id text PRIMARY KEY);
				CREATE TABLE history (version bigint PRIMARY KEY);
				CREATE INDEX items_key_idx ON items (key);`,
		},
		{
			name: "unclassified table",
			ddl:  items + `CREATE TABLE stray (x int);`,
			want: []string{"unclassified:stray"},
		},
		{
			name: "primary key without the namespace",
			ddl:  tenants + `CREATE TABLE items (id bigint PRIMARY KEY, namespace text NOT NULL);`,
			want: []string{"unique:items.items_pkey"},
		},
		{
			name: "unique index without the namespace, or with it only included",
			ddl: items + `
				CREATE UNIQUE INDEX items_key_idx ON items (key);
				CREATE UNIQUE INDEX items_key_incl_idx ON items (key) INCLUDE (namespace);
				CREATE UNIQUE INDEX items_lower_idx ON items (lower(key), namespace);`,
			want: []string{"unique:items.items_key_idx", "unique:items.items_key_incl_idx"},
		},
		{
			name: "unique constraint and exclusion constraint without the namespace",
			ddl: items + `
				ALTER TABLE items ADD COLUMN seq bigint, ADD CONSTRAINT items_seq_key UNIQUE (seq),
				    ADD CONSTRAINT items_key_excl EXCLUDE (key WITH =);`,
			want: []string{"unique:items.items_key_excl", "unique:items.items_seq_key"},
		},
		{
			name: "distribution column missing or nullable",
			ddl:  `CREATE TABLE tenants (id text PRIMARY KEY); CREATE TABLE items (namespace text, key text);`,
			want: []string{"column:items", "column:tenants", "unique:tenants.tenants_pkey"},
		},
		{
			name: "foreign key between distributed tables not on the namespace",
			ddl: items + `
				ALTER TABLE items ADD COLUMN parent_namespace text, ADD COLUMN parent_key text,
				    ADD CONSTRAINT items_parent_fkey FOREIGN KEY (parent_namespace, parent_key) REFERENCES items (namespace, key);`,
			want: []string{"foreign-key:items.items_parent_fkey"},
		},
		{
			name: "foreign key from a reference table to a distributed one",
			ddl:  items + `CREATE TABLE settings (tenant text PRIMARY KEY REFERENCES tenants (name));`,
			want: []string{"foreign-key:settings.settings_tenant_fkey"},
		},
		{
			name: "foreign key from a local table",
			ddl:  items + `CREATE TABLE history (version bigint PRIMARY KEY, tenant text REFERENCES tenants (name));`,
			want: []string{"foreign-key:history.history_tenant_fkey"},
		},
		{
			name: "sequences",
			ddl: items + `
				ALTER TABLE items ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY, ADD COLUMN n bigserial;
				CREATE SEQUENCE loose_seq;`,
			want: []string{"sequence:items.id", "sequence:items.n", "sequence:loose_seq"},
		},
		{
			name: "trigger",
			ddl: items + `
				CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
				CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();`,
			want: []string{"trigger:items.items_touch"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := pgtest.Pool(t)
			_, err := pool.Exec(ctx, tc.ddl)
			require.NoError(t, err)
			findings, err := shardingFindings(ctx, pool, rules)
			require.NoError(t, err)
			want := tc.want
			if want == nil {
				want = []string{}
			}
			require.Equal(t, want, findingIDs(findings), "%+v", findings)
		})
	}
}

// TestScalingDocMatchesShardingRules checks that docs/scaling.md classifies
// every table as shardingRules does, and names every exception.
func TestScalingDocMatchesShardingRules(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/scaling.md")
	require.NoError(t, err)
	// Rows of the classification table: | `table` | class | `column` | why |
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (distributed|reference|local) \\| (?:`([a-z_]+)`|–) \\|")
	documented := map[string]tableRule{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = tableRule{class: tableClass(m[2]), column: m[3]}
	}
	require.Equal(t, shardingRules, documented, "the table classification in docs/scaling.md")
	for id := range shardingExceptions {
		_, object, _ := strings.Cut(id, ":")
		if kind, _, _ := strings.Cut(id, ":"); kind != "sequence" {
			_, object, _ = strings.Cut(object, ".") // an index or trigger: named alone
		}
		require.Contains(t, string(doc), "`"+object+"`", "docs/scaling.md names the exception %s", id)
	}
}
