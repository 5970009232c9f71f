package main

// The harness of the console's browser tests (console_test.go): a live
// ledgerd started by run as `ledgerd serve` starts it, in development or in
// secure mode, a ledger seeded through the API, and headless Chromium
// driven through chromedp. `make test` and `make test-console` install
// Chromium first (scripts/deps.sh browser); without it the tests fail and
// say how to install it: they are never skipped.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// browserTimeout bounds everything one test does in its browser, and
// waitTimeout each wait for the page to show something (shorter, so that
// the browser can still say what the page shows when a wait fails). Both
// are generous because the tests run beside the rest of `make test` on two
// shared cores, with the race detector on.
const (
	browserTimeout = 5 * time.Minute
	waitTimeout    = 2 * time.Minute
)

// consoleWindow is the browser's viewport size, fixed so that screenshots
// are the same size every time they are taken.
var consoleWindow = struct{ width, height int }{1280, 800}

// chromiumNames are the names Chromium's executable goes by, Debian's
// first.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// chromiumPath returns the path of the Chromium executable, or fails the
// test saying how to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range chromiumNames {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatalf("the console's browser tests drive headless Chromium, and none of %s is on PATH: "+
		"install it with 'scripts/deps.sh browser' (as root; Debian's package chromium), "+
		"or run 'make test-console', which does", strings.Join(chromiumNames, ", "))
	return ""
}

// browser is one headless Chromium with one tab, for one test.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab's; every action is bounded by browserTimeout

	mu      sync.Mutex
	dialogs []string // the messages of the JavaScript dialogs that opened
}

// newBrowser starts headless Chromium with the fixed viewport size and one
// tab, closed when the test ends. Chromium refuses to run as root (as CI
// does) with its sandbox on, so the sandbox is off for root only.
// JavaScript dialogs (alert, confirm) are recorded and accepted: a test
// that must see none checks dialogsOpened.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	options := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.WindowSize(consoleWindow.width, consoleWindow.height),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("font-render-hinting", "none"), // the same glyphs in every screenshot
	)
	if os.Geteuid() == 0 {
		options = append(options, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), options...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancel := context.WithTimeout(tabCtx, browserTimeout)
	t.Cleanup(func() {
		cancel()
		cancelTab()
		cancelAlloc() // waits for Chromium to exit
	})
	b := &browser{t: t, ctx: ctx}
	// The viewport, not only the window (whose frame takes some of its
	// height), is the fixed size.
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(int64(consoleWindow.width), int64(consoleWindow.height))), "start Chromium")
	// A dialog blocks the page until it is answered. The listener may not
	// call the browser, so it records the dialog and wakes a goroutine
	// that answers it.
	opened := make(chan struct{}, 1)
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		if opening, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			b.mu.Lock()
			b.dialogs = append(b.dialogs, string(opening.Type)+": "+opening.Message)
			b.mu.Unlock()
			select {
			case opened <- struct{}{}:
			default: // already woken
			}
		}
	}))
	go func() {
		for {
			select {
			case <-opened:
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			case <-ctx.Done():
				return
			}
		}
	}()
	return b
}

// do runs chromedp actions in the tab, failing the test on an error.
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	require.NoError(b.t, chromedp.Do(b.ctx, actions...))
}

// open loads url and waits for its document to be ready.
func (b *browser) open(url string) {
	b.t.Helper()
	b.do(chromedp.Navigate(url))
}

// eval evaluates a JavaScript expression in the page and returns its
// value.
func eval[T any](b *browser, expression string) T {
	b.t.Helper()
	value, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expression))
	require.NoError(b.t, err, "evaluate %s", expression)
	return value
}

// evalPromise evaluates a JavaScript expression whose value is a promise,
// and returns what the promise resolves to.
func evalPromise[T any](b *browser, expression string) T {
	b.t.Helper()
	value, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expression, chromedp.EvalAwaitPromise))
	require.NoError(b.t, err, "evaluate %s", expression)
	return value
}

// waitFor evaluates a JavaScript expression until it is true, or fails
// the test (with what describes the condition, and the page's text) when
// waitTimeout runs out.
func (b *browser) waitFor(what, expression string) {
	b.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("Boolean("+expression+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.t.Fatalf("waiting for %s: gave up after %s (last error: %v); the page shows:\n%s", what, waitTimeout, err, b.pageText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sel returns the CSS selector of the elements whose data-test attribute
// is name.
func sel(name string) string { return `[data-test="` + name + `"]` }

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	quoted, _ := json.Marshal(s)
	return string(quoted)
}

// waitText waits until the first element that selector matches exists
// and its text contains want, and returns its text.
func (b *browser) waitText(selector, want string) string {
	b.t.Helper()
	element := "document.querySelector(" + jsString(selector) + ")"
	b.waitFor(fmt.Sprintf("%s to show %q", selector, want),
		element+" !== null && "+element+".textContent.includes("+jsString(want)+")")
	return b.text(selector)
}

// waitVisible waits until an element that selector matches exists.
func (b *browser) waitVisible(selector string) {
	b.t.Helper()
	b.waitFor(selector, "document.querySelector("+jsString(selector)+") !== null")
}

// text returns the text of the first element selector matches ("" if
// there is none).
func (b *browser) text(selector string) string {
	b.t.Helper()
	return eval[string](b, "document.querySelector("+jsString(selector)+")?.textContent ?? ''")
}

// texts returns the text of every element selector matches, in document
// order.
func (b *browser) texts(selector string) []string {
	b.t.Helper()
	return eval[[]string](b, "Array.from(document.querySelectorAll("+jsString(selector)+"), e => e.textContent)")
}

// pageText returns the whole page's text, for failure messages.
func (b *browser) pageText() string {
	text, err := chromedp.Run(b.ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	return text
}

// dialogsOpened returns the JavaScript dialogs that opened so far.
func (b *browser) dialogsOpened() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogs...)
}

// consoleLedger is a live ledgerd serving the console, seeded through its
// API, with a pool over its database for assertions on the rows.
type consoleLedger struct {
	daemon
	pool *pgxpool.Pool
	conn *grpc.ClientConn
	// tokens of the secure mode: "admin" (the platform admin,
	// platform-admin), and by principal "oncall-reader" and
	// "pipeline-worker" (a reader and a worker of consoleNamespace).
	// Empty in development mode.
	tokens map[string]string
	// seedAs is who the seeding calls (reserve, complete...) are made as:
	// a key of tokens; "admin" unless a test says otherwise.
	seedAs string
}

// consoleNamespace is the namespace the tests seed and the secure mode's
// reader and worker are bound to.
const consoleNamespace = "payments"

// startConsoleLedger runs `ledgerd serve` over a fresh schema, in
// development mode or, with secure, with authentication on: a platform
// admin bootstrapped as ledgerd bootstrap does, the namespaces the tests
// use, and a reader and a worker given tokens by that platform admin
// through the API (see consoleLedger.tokens).
func startConsoleLedger(t *testing.T, secure bool) *consoleLedger {
	t.Helper()
	return startConsoleLedgerWith(t, secure, nil)
}

// startConsoleLedgerWith is startConsoleLedger with more of ledgerd's
// environment variables (e.g. LEDGER_HEARTBEAT_EVENT_INTERVAL).
func startConsoleLedgerWith(t *testing.T, secure bool, extra map[string]string) *consoleLedger {
	t.Helper()
	url := pgtest.Schema(t)
	vars := map[string]string{"LEDGER_DATABASE_URL": url}
	maps.Copy(vars, extra)
	tokens := map[string]string{}
	if secure {
		var out, errOut ledgertest.LogBuffer
		err := run(context.Background(), []string{"bootstrap", "--principal", "platform-admin", "--database-url", url, "--log-format", "json"}, env(nil), &out, &errOut)
		require.NoError(t, err, errOut.String())
		tokens["admin"] = regexp.MustCompile(`ldg_[0-9a-f]+_[A-Za-z0-9_-]+`).FindString(out.String())
		require.NotEmpty(t, tokens["admin"], out.String())
		vars["LEDGER_INSECURE_DEV"] = "false"
		// The tokens the test creates are loaded at the next refresh.
		vars["LEDGER_AUTH_REFRESH_INTERVAL"] = "200ms"
	}
	c := &consoleLedger{daemon: startDaemon(t, vars), pool: ledgertest.Pool(t, url), tokens: tokens, seedAs: "admin"}
	conn, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c.conn = conn
	if secure {
		ctx := c.as("admin")
		admin := ledgerv1.NewLedgerAdminServiceClient(conn)
		// With authentication on, namespaces are not created on first use.
		for _, name := range []string{consoleNamespace, "emails", "exports"} {
			_, err := admin.CreateNamespace(ctx, &ledgerv1.CreateNamespaceRequest{Name: name, Reason: "console browser test"})
			require.NoError(t, err)
		}
		for _, grant := range []struct {
			principal string
			role      ledgerv1.Role
			pattern   string
		}{
			{"oncall-reader", ledgerv1.Role_ROLE_READER, consoleNamespace},
			{"pipeline-worker", ledgerv1.Role_ROLE_WORKER, consoleNamespace},
		} {
			created, err := admin.CreateToken(ctx, &ledgerv1.CreateTokenRequest{Principal: grant.principal, Reason: "console browser test"})
			require.NoError(t, err)
			_, err = admin.GrantRole(ctx, &ledgerv1.GrantRoleRequest{Reason: "console browser test", Binding: &ledgerv1.RoleBinding{
				Principal: grant.principal, NamespacePattern: grant.pattern, Role: grant.role,
			}})
			require.NoError(t, err)
			tokens[grant.principal] = created.GetSecret()
		}
		// The daemon loads new credentials at its next refresh.
		require.Eventually(t, func() bool {
			_, err := admin.WhoAmI(c.as("oncall-reader"), &ledgerv1.WhoAmIRequest{})
			return err == nil
		}, time.Minute, 50*time.Millisecond, "the reader's token is not accepted")
	}
	return c
}

// as returns a context whose calls carry the token of who (see tokens;
// none in development mode).
func (c *consoleLedger) as(who string) context.Context {
	ctx := context.Background()
	if token := c.tokens[who]; token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return ctx
}

// ledger returns a client of the ledger's API as seedAs (anonymous, in
// development mode).
func (c *consoleLedger) ledger() (context.Context, ledgerv1.LedgerServiceClient) {
	return c.as(c.seedAs), ledgerv1.NewLedgerServiceClient(c.conn)
}

// consoleURL is the address of a console page: fragment is the part
// after /ui/ (e.g. "#/namespaces").
func (c *consoleLedger) consoleURL(fragment string) string {
	return "http://" + c.httpAddr + "/ui/" + fragment
}

// reserve claims key for owner with a lease of leaseTTL, and returns its
// fencing token.
func (c *consoleLedger) reserve(t *testing.T, namespace, key, owner string, leaseTTL time.Duration) int64 {
	t.Helper()
	return c.reserveWith(t, namespace, key, owner, leaseTTL, nil)
}

// reserveWith is reserve with metadata (labels) on the entry.
func (c *consoleLedger) reserveWith(t *testing.T, namespace, key, owner string, leaseTTL time.Duration, metadata map[string]string) int64 {
	t.Helper()
	ctx, client := c.ledger()
	res, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: key, Owner: owner,
		LeaseTtl: durationpb.New(leaseTTL), Metadata: metadata})
	require.NoError(t, err)
	require.NotNil(t, res.GetAcquired(), "reserve %s/%s as %s: %v", namespace, key, owner, res)
	return res.GetAcquired().GetFencingToken()
}

// complete records result for key under token.
func (c *consoleLedger) complete(t *testing.T, namespace, key string, token int64, result string) {
	t.Helper()
	ctx, client := c.ledger()
	_, err := client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: namespace, Key: key, FencingToken: token, Result: []byte(result)})
	require.NoError(t, err)
}

// heartbeat extends key's lease under token by leaseTTL, with a
// checkpoint.
func (c *consoleLedger) heartbeat(t *testing.T, namespace, key string, token int64, leaseTTL time.Duration, checkpoint string) {
	t.Helper()
	ctx, client := c.ledger()
	_, err := client.Heartbeat(ctx, &ledgerv1.HeartbeatRequest{Namespace: namespace, Key: key, FencingToken: token,
		LeaseTtl: durationpb.New(leaseTTL), Checkpoint: []byte(checkpoint)})
	require.NoError(t, err)
}

// fail records a permanent failure of key under token.
func (c *consoleLedger) fail(t *testing.T, namespace, key string, token int64, code, message string) {
	t.Helper()
	ctx, client := c.ledger()
	_, err := client.Fail(ctx, &ledgerv1.FailRequest{Namespace: namespace, Key: key, FencingToken: token,
		Error: &ledgerv1.WorkError{Code: code, Message: message}})
	require.NoError(t, err)
}

// expireLease moves key's lease expiry into the past by the database's
// clock, as if its holder had stopped heartbeating minutes ago: the key is
// stuck until someone reclaims it.
func (c *consoleLedger) expireLease(t *testing.T, namespace, key string) {
	t.Helper()
	tag, err := c.pool.Exec(context.Background(),
		`UPDATE entries SET lease_expires_at = now() - interval '5 minutes' WHERE namespace = $1 AND key = $2 AND state = 'leased'`,
		namespace, key)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected(), "%s/%s is not leased", namespace, key)
}

// entryRow is what the tests check of an entries row.
type entryRow struct {
	State        string
	Owner        string
	FencingToken int64
}

// row reads key's entries row.
func (c *consoleLedger) row(t *testing.T, namespace, key string) entryRow {
	t.Helper()
	var r entryRow
	require.NoError(t, c.pool.QueryRow(context.Background(),
		`SELECT state, owner, fencing_token FROM entries WHERE namespace = $1 AND key = $2`, namespace, key).
		Scan(&r.State, &r.Owner, &r.FencingToken))
	return r
}

// eventRow is what the tests check of an events row.
type eventRow struct {
	Kind, Caller, Reason string
}

// events reads key's events, oldest first, with the reason of the admin
// actions (detail->>'reason').
func (c *consoleLedger) events(t *testing.T, namespace, key string) []eventRow {
	t.Helper()
	rows, err := c.pool.Query(context.Background(),
		`SELECT kind, caller, coalesce(detail->>'reason', '') FROM events WHERE namespace = $1 AND key = $2 ORDER BY id`, namespace, key)
	require.NoError(t, err)
	defer rows.Close()
	var events []eventRow
	for rows.Next() {
		var e eventRow
		require.NoError(t, rows.Scan(&e.Kind, &e.Caller, &e.Reason))
		events = append(events, e)
	}
	require.NoError(t, rows.Err())
	return events
}
