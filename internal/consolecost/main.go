// Command consolecost measures what the console's pages cost on a big
// ledger: it fills a ledger with --entries entries (10 M by default) and
// about two events per entry, by SQL in bulk, then times each RPC a console
// page makes, with that page's filters, through a ledgerd server, and shows
// the EXPLAIN (ANALYZE, BUFFERS) of the statement behind each. It fails
// (exit 1) if any of them reads entries or events with a sequential scan,
// except the Events page's rare kinds over a time range wider than the
// page's default, which the user chose: their scans are listed at the end.
//
//	go run ./internal/consolecost                     # a private PostgreSQL, destroyed afterwards
//	go run ./internal/consolecost --keep .data/consolecost  # keep the filled cluster, reuse it next time
//	go run ./internal/consolecost --database-url URL  # an empty (or already filled) database of your own
//
// It is not part of `make test`: the fill takes many minutes and gigabytes
// of disk. docs/performance.md ("Console") has the figures of a run.
package main

import (
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

//go:embed fill_entries.sql
var fillEntries string

//go:embed fill_events.sql
var fillEvents string

// bulkNamespace is the namespace that holds the entries; smallNamespaces
// are listed beside it with a few entries each.
const bulkNamespace = "checkout"

var smallNamespaces = []string{"billing", "emails", "exports", "ledger-sync"}

// requestTimeout bounds each RPC, as ledgerd's --request-timeout does by
// default (a console call carries no deadline of its own).
const requestTimeout = 10 * time.Second

// fillChunk is how many entries one fill statement inserts: big enough to
// be fast, small enough to report progress.
const fillChunk = 1_000_000

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consolecost:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("consolecost", flag.ContinueOnError)
	databaseURL := flags.String("database-url", "", "an empty database to fill, or one this program filled (default: a private PostgreSQL)")
	keep := flags.String("keep", "", "keep the private PostgreSQL's data in this directory, and reuse what it holds on the next run")
	entries := flags.Int64("entries", 10_000_000, "entries to put in the namespace "+bulkNamespace)
	runs := flags.Int("runs", 5, "times each RPC is timed (after one warm-up); the median is shown")
	verbose := flags.Bool("plans", true, "print each statement's EXPLAIN (ANALYZE, BUFFERS)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *entries < 1000 || *runs < 1 {
		return errors.New("--entries must be at least 1000 and --runs at least 1")
	}
	if *databaseURL == "" {
		fmt.Fprintln(out, "starting a private PostgreSQL (fsync off)")
		pg, err := devcluster.StartPostgres(ctx, devcluster.PostgresConfig{Durability: devcluster.Throwaway, Dir: *keep, Keep: *keep != ""})
		if err != nil {
			return err
		}
		if *keep != "" {
			defer func() { _ = pg.Stop(context.WithoutCancel(ctx)) }()
		} else {
			defer func() { _ = pg.Destroy() }()
		}
		*databaseURL = pg.URL()
	}
	poolConfig, err := pgxpool.ParseConfig(*databaseURL)
	if err != nil {
		return errors.New("--database-url is not a PostgreSQL URL")
	}
	ledger.ConfigurePool(poolConfig)
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Timed: on a cluster filled by an older ledgerd (--keep), this is
	// what the new migrations cost on a big ledger (an index build, say).
	migrating := time.Now()
	applied, err := ledger.Migrate(ctx, pool, nil)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		fmt.Fprintf(out, "applied migrations %v in %s\n", applied, time.Since(migrating).Round(time.Millisecond))
	}
	store, err := ledger.New(pool, ledger.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if err := fill(ctx, pool, store, *entries, out); err != nil {
		return err
	}

	client, stop, err := serve(store)
	if err != nil {
		return err
	}
	defer stop()
	var scans, allowed []string
	fmt.Fprintf(out, "\n| page | RPC and filters | statement | median of %d | rows read (plan) |\n| --- | --- | --- | ---: | --- |\n", *runs)
	var plans strings.Builder
	for _, c := range pageCalls(*entries) {
		elapsed := "EXPLAIN only"
		if c.rpc != nil {
			median, err := timeCall(ctx, client, c, *runs)
			switch {
			case status.Code(err) == codes.DeadlineExceeded:
				// The figure to write down: the page shows the refusal.
				elapsed = fmt.Sprintf("over the request timeout (%s): DEADLINE_EXCEEDED", requestTimeout)
			case err != nil:
				return fmt.Errorf("%s (%s): %w", c.page, c.call, err)
			default:
				elapsed = median.Round(10 * time.Microsecond).String()
			}
		}
		plan, err := explain(ctx, pool, c.statement, c.args)
		if err != nil {
			return fmt.Errorf("explain %s: %w", c.statement, err)
		}
		for _, table := range []string{"entries", "events"} {
			if !strings.Contains(plan, "Seq Scan on "+table) {
				continue
			}
			scan := fmt.Sprintf("%s (%s): Seq Scan on %s", c.page, c.call, table)
			if c.userRange {
				allowed = append(allowed, scan)
			} else {
				scans = append(scans, scan)
			}
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", c.page, c.call, c.statement, elapsed, readsOf(plan))
		fmt.Fprintf(&plans, "\n### %s: %s (%s)\n\n%s", c.page, c.call, c.statement, plan)
	}
	if *verbose {
		fmt.Fprint(out, plans.String())
	}
	if len(allowed) > 0 {
		fmt.Fprintf(out, "\nsequential scans over a range the user chose (not failed):\n  %s\n", strings.Join(allowed, "\n  "))
	}
	if len(scans) > 0 {
		return fmt.Errorf("sequential scans:\n  %s", strings.Join(scans, "\n  "))
	}
	fmt.Fprintln(out, "\nno statement of a page's default or indexed filters reads entries or events with a sequential scan")
	return nil
}

// fill creates the namespaces and puts the entries and their events in,
// then vacuums and analyzes, as a ledger that has run for a while has been.
func fill(ctx context.Context, pool *pgxpool.Pool, store *ledger.Store, entries int64, out io.Writer) error {
	var filled int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM entries WHERE namespace = $1`, bulkNamespace).Scan(&filled); err != nil {
		return err
	}
	if filled == entries {
		fmt.Fprintf(out, "reusing the %d entries of %s\n", filled, bulkNamespace)
		return nil
	}
	if filled != 0 {
		return fmt.Errorf("the database holds %d entries of %s, not %d: give an empty one", filled, bulkNamespace, entries)
	}
	maxHeld, maxBytes := int64(50_000), int64(64<<30)
	for _, name := range append([]string{bulkNamespace}, smallNamespaces...) {
		update := ledger.NamespaceUpdate{}
		if name == bulkNamespace { // the quotas GetNamespace reports usage against
			update.MaxHeldLeases, update.MaxStoredBytes = &maxHeld, &maxBytes
		}
		if _, err := store.CreateNamespace(ctx, name, update, "consolecost"); err != nil {
			return err
		}
	}
	started := time.Now()
	for _, name := range smallNamespaces {
		if err := fillRange(ctx, pool, name, 1, 1000); err != nil {
			return err
		}
	}
	for lo := int64(1); lo <= entries; lo += fillChunk {
		hi := min(lo+fillChunk-1, entries)
		if err := fillRange(ctx, pool, bulkNamespace, lo, hi); err != nil {
			return err
		}
		fmt.Fprintf(out, "filled %d of %d entries and their events in %s\n", hi, entries, time.Since(started).Round(time.Second))
	}
	// The stored bytes of the namespace's quota, as the ledger keeps them
	// (migrations/00007_stored_bytes.sql).
	if _, err := pool.Exec(ctx, `UPDATE namespace_usage SET stored_bytes = (
		SELECT coalesce(sum(entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message)), 0)
		FROM entries WHERE namespace = $1) WHERE namespace = $1`, bulkNamespace); err != nil {
		return fmt.Errorf("count stored bytes: %w", err)
	}
	for _, sql := range []string{"VACUUM (ANALYZE) entries", "VACUUM (ANALYZE) events", "ANALYZE namespaces"} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	var entriesSize, eventsSize string
	var events int64
	if err := pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_total_relation_size('entries')), pg_size_pretty(pg_total_relation_size('events')),
		(SELECT count(*) FROM events)`).Scan(&entriesSize, &eventsSize, &events); err != nil {
		return err
	}
	fmt.Fprintf(out, "filled in %s (vacuumed and analyzed): %d entries (%s with indexes), %d events (%s)\n",
		time.Since(started).Round(time.Second), entries+int64(len(smallNamespaces))*1000, entriesSize, events, eventsSize)
	return nil
}

// fillRange inserts the entries lo..hi of namespace, then their events.
func fillRange(ctx context.Context, pool *pgxpool.Pool, namespace string, lo, hi int64) error {
	if _, err := pool.Exec(ctx, fillEntries, namespace, lo, hi); err != nil {
		return fmt.Errorf("fill entries %d..%d of %s: %w", lo, hi, namespace, err)
	}
	if _, err := pool.Exec(ctx, fillEvents, namespace, entryKey(lo), entryKey(hi+1)); err != nil {
		return fmt.Errorf("fill events of entries %d..%d of %s: %w", lo, hi, namespace, err)
	}
	return nil
}

// entryKey is the key of the entry g, as fill_entries.sql names it.
func entryKey(g int64) string { return fmt.Sprintf("order-%09d", g) }

// serve serves store with ledgerd's gRPC server on a loopback port, as
// `ledgerd serve --insecure-dev` does, and returns a client of its admin
// API.
func serve(store *ledger.Store) (ledgerv1.LedgerAdminServiceClient, func(), error) {
	srv, err := server.New(store, server.Config{Logger: slog.New(slog.DiscardHandler), DefaultTimeout: requestTimeout})
	if err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Shutdown(context.Background())
		return nil, nil, err
	}
	return ledgerv1.NewLedgerAdminServiceClient(conn), func() {
		_ = conn.Close()
		srv.Shutdown(context.Background())
	}, nil
}

// pageCall is one RPC a console page makes, and the statement behind it
// with the arguments the store passes it (see ledger/listing.go and
// ledger/namespaces.go), for EXPLAIN.
type pageCall struct {
	page, call string
	rpc        func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error // nil: EXPLAIN only
	statement  string
	args       []any
	// userRange: a time range the user chose, wider than the page's
	// default, that reads every event in it to find a rare kind (see
	// docs/performance.md, "Console"). Its sequential scan is reported,
	// and does not fail the run.
	userRange bool
}

// pageCalls are the console's calls on the filled ledger; entries is how
// many the bulk namespace holds.
func pageCalls(entries int64) []pageCall {
	const size = 100
	deepKey := entryKey(entries * 9 / 10)
	// A page token, as ledger/listing.go encodes one: the last key of the
	// previous page. Paging to 90% of the namespace would take 90,000
	// calls; the token takes the console there at once.
	deepToken := base64.RawURLEncoding.EncodeToString([]byte(`{"k":"` + deepKey + `"}`))
	hourAgo, dayAgo := time.Now().Add(-time.Hour), time.Now().Add(-24*time.Hour)
	// list is a call of the Entries page.
	list := func(call string, req *ledgerv1.ListEntriesRequest, statement string, args ...any) pageCall {
		req.Namespace, req.PageSize = bulkNamespace, size
		return pageCall{page: "Entries", call: call, statement: statement, args: args,
			rpc: func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error {
				_, err := c.ListEntries(ctx, req)
				return err
			}}
	}
	// The arguments of list_entries.sql and list_entries_leased.sql:
	// namespace, after key, prefix, prefix end, states, owner, updated
	// after, updated before, stuck, page size + 1.
	entryArgs := func(after, prefix, prefixEnd any, states []string, owner string, updatedAfter any, stuck bool) []any {
		var statesArg any
		if states != nil {
			statesArg = states
		}
		return []any{bulkNamespace, after, prefix, prefixEnd, statesArg, owner, updatedAfter, nil, stuck, size + 1}
	}
	// events is a call of the Events page with kinds, from start (zero:
	// the oldest event) to now, settled events only, as the page asks.
	events := func(call string, start time.Time, statement string, kinds ...ledgerv1.EventKind) pageCall {
		names := make([]string, len(kinds))
		for i, kind := range kinds {
			names[i] = eventKindNames[kind]
		}
		req := &ledgerv1.ListEventsRequest{Namespace: bulkNamespace, Kinds: kinds}
		if !start.IsZero() {
			req.StartTime = timestamppb.New(start)
		}
		return pageCall{page: "Events", call: "ListEvents, " + call, statement: statement,
			args: []any{bulkNamespace, start, time.Now(), nil, nil, names, size + 1},
			rpc: func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error {
				_, err := c.ListEvents(ctx, req)
				return err
			}}
	}
	return []pageCall{
		{page: "Namespaces", call: "ListNamespaces", statement: "namespace_list", args: []any{"", size + 1},
			rpc: func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error {
				_, err := c.ListNamespaces(ctx, &ledgerv1.ListNamespacesRequest{})
				return err
			}},
		{page: "Namespaces", call: "GetNamespace (usage: held and expired leases)", statement: "namespace_leases", args: []any{bulkNamespace},
			rpc: func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error {
				_, err := c.GetNamespace(ctx, &ledgerv1.GetNamespaceRequest{Name: bulkNamespace})
				return err
			}},
		// /metrics's lease gauges: no RPC of their own, so EXPLAIN only.
		{page: "Namespaces", call: "held and expired leases of every namespace (/metrics)", statement: "lease_counts"},
		list("no filter, first page", &ledgerv1.ListEntriesRequest{},
			"list_entries", entryArgs(nil, "", nil, nil, "", nil, false)...),
		list("no filter, a page 90% deep", &ledgerv1.ListEntriesRequest{PageToken: deepToken},
			"list_entries", entryArgs(deepKey, "", nil, nil, "", nil, false)...),
		list("state completed (98%)", &ledgerv1.ListEntriesRequest{States: []ledgerv1.State{ledgerv1.State_STATE_COMPLETED}},
			"list_entries", entryArgs(nil, "", nil, []string{"completed"}, "", nil, false)...),
		list("state failed (1%)", &ledgerv1.ListEntriesRequest{States: []ledgerv1.State{ledgerv1.State_STATE_FAILED}},
			"list_entries", entryArgs(nil, "", nil, []string{"failed"}, "", nil, false)...),
		list("state failed (1%), a page 90% deep", &ledgerv1.ListEntriesRequest{States: []ledgerv1.State{ledgerv1.State_STATE_FAILED}, PageToken: deepToken},
			"list_entries", entryArgs(deepKey, "", nil, []string{"failed"}, "", nil, false)...),
		list("state leased (0.1%)", &ledgerv1.ListEntriesRequest{States: []ledgerv1.State{ledgerv1.State_STATE_LEASED}},
			"list_entries_leased", entryArgs(nil, "", nil, []string{"leased"}, "", nil, false)...),
		list("stuck (expired leases, 0.05%)", &ledgerv1.ListEntriesRequest{Stuck: true},
			"list_entries_leased", entryArgs(nil, "", nil, nil, "", nil, true)...),
		list("stuck, a page 90% deep", &ledgerv1.ListEntriesRequest{Stuck: true, PageToken: deepToken},
			"list_entries_leased", entryArgs(deepKey, "", nil, nil, "", nil, true)...),
		list("owner worker-7 (0.2%)", &ledgerv1.ListEntriesRequest{Owner: "worker-7"},
			"list_entries", entryArgs(nil, "", nil, nil, "worker-7", nil, false)...),
		list("owner with no entries", &ledgerv1.ListEntriesRequest{Owner: "nobody"},
			"list_entries", entryArgs(nil, "", nil, nil, "nobody", nil, false)...),
		list("key prefix order-00500", &ledgerv1.ListEntriesRequest{KeyPrefix: "order-00500"},
			"list_entries", entryArgs(nil, "order-00500", "order-00501", nil, "", nil, false)...),
		list("updated in the last hour (0.14%)", &ledgerv1.ListEntriesRequest{UpdatedAfter: timestamppb.New(hourAgo)},
			"list_entries", entryArgs(nil, "", nil, nil, "", hourAgo, false)...),
		{page: "Key", call: "GetHistory", statement: "get_history", args: []any{bulkNamespace, deepKey, 0, size + 1},
			rpc: func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error {
				_, err := c.GetHistory(ctx, &ledgerv1.GetHistoryRequest{Namespace: bulkNamespace, Key: deepKey})
				return err
			}},
		{page: "Events", call: "ListEvents, the last hour", statement: "list_events",
			args: []any{bulkNamespace, hourAgo, time.Now(), nil, nil, nil, size + 1},
			rpc: func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error {
				_, err := c.ListEvents(ctx, &ledgerv1.ListEventsRequest{Namespace: bulkNamespace, StartTime: timestamppb.New(hourAgo)})
				return err
			}},
		{page: "Events", call: "ListEvents, everything, first page", statement: "list_events",
			args: []any{bulkNamespace, time.Time{}, time.Now(), nil, nil, nil, size + 1},
			rpc: func(ctx context.Context, c ledgerv1.LedgerAdminServiceClient) error {
				_, err := c.ListEvents(ctx, &ledgerv1.ListEventsRequest{Namespace: bulkNamespace})
				return err
			}},
		// Kinds of admin actions alone: list_events_admin.sql, over their
		// partial index, whatever the range.
		events("kind force_released (none), everything", time.Time{}, "list_events_admin", ledgerv1.EventKind_EVENT_KIND_FORCE_RELEASED),
		events("kinds force_released, reset, namespace_changed (one), everything", time.Time{}, "list_events_admin",
			ledgerv1.EventKind_EVENT_KIND_FORCE_RELEASED, ledgerv1.EventKind_EVENT_KIND_RESET, ledgerv1.EventKind_EVENT_KIND_NAMESPACE_CHANGED),
		// Any other kind: list_events.sql, which reads the range's events
		// and keeps those of the kinds. The page's default range with such
		// a kind is the last hour (server/console/static/js/events.js); a
		// longer one is the user's choice, whose scans are shown, not
		// failed.
		events("kind failed (1%), the last hour (the page's default with a kind)", hourAgo, "list_events", ledgerv1.EventKind_EVENT_KIND_FAILED),
		wide(events("kind failed (1%), the last 24 hours", dayAgo, "list_events", ledgerv1.EventKind_EVENT_KIND_FAILED)),
		wide(events("kind failed (1%), everything", time.Time{}, "list_events", ledgerv1.EventKind_EVENT_KIND_FAILED)),
		events("kind refused_stale_token (none), the last hour (the page's default with a kind)", hourAgo, "list_events",
			ledgerv1.EventKind_EVENT_KIND_REFUSED_STALE_TOKEN),
		wide(events("kind refused_stale_token (none), the last 24 hours", dayAgo, "list_events", ledgerv1.EventKind_EVENT_KIND_REFUSED_STALE_TOKEN)),
		wide(events("kind refused_stale_token (none), everything", time.Time{}, "list_events", ledgerv1.EventKind_EVENT_KIND_REFUSED_STALE_TOKEN)),
	}
}

// wide marks c as a range the user chose beyond the page's default.
func wide(c pageCall) pageCall {
	c.userRange = true
	return c
}

// eventKindNames are the names events stores of the kinds consolecost
// filters on.
var eventKindNames = map[ledgerv1.EventKind]string{
	ledgerv1.EventKind_EVENT_KIND_FORCE_RELEASED:      "force_released",
	ledgerv1.EventKind_EVENT_KIND_RESET:               "reset",
	ledgerv1.EventKind_EVENT_KIND_NAMESPACE_CHANGED:   "namespace_changed",
	ledgerv1.EventKind_EVENT_KIND_FAILED:              "failed",
	ledgerv1.EventKind_EVENT_KIND_REFUSED_STALE_TOKEN: "refused_stale_token",
}

// timeCall makes c's RPC once to warm the caches, then runs times, and
// returns the median.
func timeCall(ctx context.Context, client ledgerv1.LedgerAdminServiceClient, c pageCall, runs int) (time.Duration, error) {
	if err := c.rpc(ctx, client); err != nil {
		return 0, err
	}
	times := make([]time.Duration, runs)
	for i := range times {
		started := time.Now()
		if err := c.rpc(ctx, client); err != nil {
			return 0, err
		}
		times[i] = time.Since(started)
	}
	slices.Sort(times)
	return times[runs/2], nil
}

// explain returns the EXPLAIN (ANALYZE, BUFFERS) of the named statement
// with args.
func explain(ctx context.Context, pool *pgxpool.Pool, statement string, args []any) (string, error) {
	text, err := ledger.Statement(statement)
	if err != nil {
		return "", err
	}
	rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+text, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", err
		}
		plan.WriteString("    " + line + "\n")
	}
	return plan.String(), rows.Err()
}

// readsOf summarises a plan for the table: its scan nodes with the rows
// they returned and removed by their filters.
func readsOf(plan string) string {
	var reads []string
	lines := strings.Split(plan, "\n")
	for i, line := range lines {
		trimmed := strings.TrimLeft(strings.TrimSpace(line), "-> ")
		if !strings.Contains(trimmed, "Scan") || !strings.Contains(trimmed, " on ") {
			continue
		}
		node, _, _ := strings.Cut(trimmed, "  (")
		rows := ""
		if _, actual, ok := strings.Cut(trimmed, "actual time="); ok {
			if _, r, ok := strings.Cut(actual, "rows="); ok {
				rows, _, _ = strings.Cut(r, " ")
			}
		}
		removed := ""
		for _, next := range lines[i+1 : min(i+6, len(lines))] {
			if _, n, ok := strings.Cut(next, "Rows Removed by Filter: "); ok {
				removed = ", " + strings.TrimSpace(n) + " filtered out"
				break
			}
		}
		reads = append(reads, fmt.Sprintf("%s: %s rows%s", node, rows, removed))
	}
	return strings.Join(reads, "; ")
}
