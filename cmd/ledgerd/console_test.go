package main

// The console's browser tests: headless Chromium drives the pages that a
// live ledgerd serves under /ui/ (server/console), and every test checks
// both what the page shows and the rows in the database. The harness is
// console_harness_test.go; `make test-console` runs these alone.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// The keys the tests seed in consoleNamespace.
const (
	stuckKey     = "invoice-1001" // its holder stopped heartbeating: the lease ran out
	heldKey      = "invoice-1002" // held, the lease current
	completedKey = "invoice-1003"
)

// seedLeases gives consoleNamespace a stuck key (owned by worker-stuck),
// a held key (worker-held) and a completed key, and returns the held key's
// fencing token.
func seedLeases(t *testing.T, c *consoleLedger) (heldToken int64) {
	t.Helper()
	c.reserve(t, consoleNamespace, stuckKey, "worker-stuck", time.Minute)
	c.expireLease(t, consoleNamespace, stuckKey)
	heldToken = c.reserve(t, consoleNamespace, heldKey, "worker-held", time.Hour)
	c.complete(t, consoleNamespace, completedKey, c.reserve(t, consoleNamespace, completedKey, "worker-done", time.Minute), "shipped")
	return heldToken
}

// openKey opens the key page of namespace/key, and waits for its entry
// and its timeline.
func openKey(b *browser, c *consoleLedger, namespace, key string) {
	b.t.Helper()
	b.open(c.consoleURL("#/ns/" + namespace + "/key/" + encodeURIComponent(key)))
	b.waitVisible(sel("entry"))
	b.waitVisible(sel("timeline"))
}

// encodeURIComponent encodes s as JavaScript's encodeURIComponent does
// (the console's own links are built with it).
func encodeURIComponent(s string) string {
	var out strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			out.WriteByte(c)
		} else {
			fmt.Fprintf(&out, "%%%02X", c)
		}
	}
	return out.String()
}

// signIn enters the token of who (see consoleLedger.tokens) in the
// console's sign-in form, as a person pastes it, and waits until the
// header names the caller, principal.
func signIn(b *browser, c *consoleLedger, who, principal string) {
	b.t.Helper()
	b.open(c.consoleURL(""))
	b.waitVisible(sel("token-input"))
	b.do(chromedp.SendKeys(chromedp.CSS(sel("token-input")), c.tokens[who]),
		chromedp.Click(chromedp.CSS(sel("token-submit"))))
	b.waitText(sel("whoami"), principal)
}

// TestConsoleNamespaces: the namespace list shows each namespace the test
// seeded, with its held and expired leases as the database counts them.
func TestConsoleNamespaces(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, false)
	seedLeases(t, c)
	c.reserve(t, "emails", "welcome-1", "mailer", time.Hour)
	c.reserve(t, "emails", "welcome-2", "mailer", time.Hour)

	b := newBrowser(t)
	b.open(c.consoleURL(""))
	b.waitVisible(sel("namespaces-table"))
	row := func(namespace, field string) string {
		return `[data-test="namespace-row"][data-namespace="` + namespace + `"] ` + sel(field)
	}
	want := map[string]struct{ held, expired int }{consoleNamespace: {1, 1}, "emails": {2, 0}}
	for namespace, leases := range want {
		b.waitVisible(row(namespace, "ns-expired-leases"))
		require.Contains(t, b.text(row(namespace, "ns-held-leases")), fmt.Sprint(leases.held), namespace)
		require.Equal(t, fmt.Sprint(leases.expired), strings.TrimSpace(b.text(row(namespace, "ns-expired-leases"))), namespace)
		require.Equal(t, namespace, b.text(row(namespace, "namespace-link")))
	}
	require.ElementsMatch(t, []string{consoleNamespace, "emails"}, b.texts(sel("namespace-link")))

	// The same figures, counted in the database.
	for namespace, leases := range want {
		var held, expired int
		require.NoError(t, c.pool.QueryRow(context.Background(), `SELECT
			count(*) FILTER (WHERE lease_expires_at > now()), count(*) FILTER (WHERE lease_expires_at <= now())
			FROM entries WHERE namespace = $1 AND state = 'leased'`, namespace).Scan(&held, &expired))
		require.Equal(t, leases.held, held, namespace)
		require.Equal(t, leases.expired, expired, namespace)
	}
}

// TestConsoleStuckLeases: the namespace's "stuck" shortcut lists exactly
// the key whose lease ran out, not the held one nor the completed one, and
// its row links to the key's page.
func TestConsoleStuckLeases(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, false)
	seedLeases(t, c)

	b := newBrowser(t)
	b.open(c.consoleURL("#/namespaces"))
	b.waitVisible(sel("ns-stuck-link"))
	b.do(chromedp.Click(chromedp.CSS(sel("ns-stuck-link"))))
	b.waitVisible(sel("entries-table"))
	require.Equal(t, []string{stuckKey}, eval[[]string](b, `Array.from(document.querySelectorAll('[data-test="entry-row"]'), r => r.dataset.key)`))
	require.Equal(t, "worker-stuck", b.text(sel("entry-owner")))
	require.True(t, eval[bool](b, `document.querySelector('[data-test="filter-stuck"]').checked`), "the filter shows as set")

	// All three, unfiltered.
	b.do(chromedp.Click(chromedp.CSS(sel("filter-clear"))))
	b.waitFor("three rows", `document.querySelectorAll('[data-test="entry-row"]').length === 3`)

	// The row's link opens the key.
	b.open(c.consoleURL("#/ns/" + consoleNamespace + "/entries?stuck=1"))
	b.waitVisible(sel("entry-link"))
	b.do(chromedp.Click(chromedp.CSS(sel("entry-link"))))
	require.Equal(t, stuckKey, b.waitText(sel("key-name"), stuckKey))

	// The database agrees: that key alone is leased with its lease run out.
	var stuck []string
	rows, err := c.pool.Query(context.Background(),
		`SELECT key FROM entries WHERE namespace = $1 AND state = 'leased' AND lease_expires_at <= now() ORDER BY key`, consoleNamespace)
	require.NoError(t, err)
	for rows.Next() {
		var key string
		require.NoError(t, rows.Scan(&key))
		stuck = append(stuck, key)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{stuckKey}, stuck)
}

// TestConsoleKeyTimeline: a key reserved by one worker, reclaimed by
// another once its lease ran out, and completed shows those three steps,
// with the previous owner, in the order of its events.
func TestConsoleKeyTimeline(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, false)
	const key = "settlement-77"
	c.reserve(t, consoleNamespace, key, "worker-a", time.Minute)
	c.expireLease(t, consoleNamespace, key)
	token := c.reserve(t, consoleNamespace, key, "worker-x", time.Minute)
	c.complete(t, consoleNamespace, key, token, "settled")

	b := newBrowser(t)
	openKey(b, c, consoleNamespace, key)
	kinds := eval[[]string](b, `Array.from(document.querySelectorAll('[data-test="timeline-item"]'), i => i.dataset.kind)`)
	require.Equal(t, []string{"reserved", "reclaimed", "completed"}, kinds)
	what := b.texts(sel("timeline-what"))
	require.Contains(t, what[0], "worker-a")
	require.Contains(t, what[1], "worker-x")
	require.Contains(t, b.texts(sel("timeline-detail"))[1], "previous owner worker-a")
	require.Contains(t, what[2], "worker-x")
	require.Equal(t, "worker-x", b.text(sel("entry-owner")))
	require.Equal(t, "completed", eval[string](b, `document.querySelector('[data-test="entry-state"]').dataset.state`))
	require.Equal(t, fmt.Sprint(token), b.text(sel("entry-token")))

	require.Equal(t, []string{"reserved", "reclaimed", "completed"}, kindsOf(c.events(t, consoleNamespace, key)))
	require.Equal(t, entryRow{State: "completed", Owner: "worker-x", FencingToken: token}, c.row(t, consoleNamespace, key))
}

func kindsOf(events []eventRow) []string {
	kinds := make([]string, len(events))
	for i, e := range events {
		kinds[i] = e.Kind
	}
	return kinds
}

// forceRelease goes through the key page's force-release form: the
// reason, the review that says what will change, and the confirmation.
func forceRelease(b *browser, reason string) (confirm string) {
	b.t.Helper()
	b.waitVisible(sel("force-release-open"))
	b.do(chromedp.Click(chromedp.CSS(sel("force-release-open"))))
	b.waitVisible(sel("force-release-reason"))
	b.do(chromedp.SendKeys(chromedp.CSS(sel("force-release-reason")), reason),
		chromedp.Click(chromedp.CSS(sel("force-release-review"))))
	b.waitVisible(sel("force-release-submit"))
	confirm = b.text(sel("force-release-confirm"))
	b.do(chromedp.Click(chromedp.CSS(sel("force-release-submit"))))
	return confirm
}

// TestConsoleForceRelease: in secure mode, a platform admin who signed in
// with a token force-releases a held key with a reason: the page says what
// will change, the release shows in the timeline with the reason and the
// caller, and the row is released with the token moved on. The token stays
// in the tab's sessionStorage: never in a cookie, never in an address.
func TestConsoleForceRelease(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, true)
	heldToken := seedLeases(t, c)

	b := newBrowser(t)
	signIn(b, c, "admin", "platform-admin")
	openKey(b, c, consoleNamespace, heldKey)
	const reason = "pipeline stuck on a dead host; releasing for the retry"
	confirm := forceRelease(b, reason)
	require.Contains(t, confirm, "worker-held")
	require.Contains(t, confirm, reason)
	require.Contains(t, b.waitText(sel("force-release-result"), "Released"), "released")
	item := `[data-test="timeline-item"][data-kind="force_released"] `
	b.waitVisible(item + sel("timeline-reason"))
	require.Equal(t, reason, b.text(item+sel("timeline-reason")))
	require.Equal(t, "platform-admin", b.text(item+sel("timeline-caller")))
	b.waitFor("the entry to show released", `document.querySelector('[data-test="entry-state"]')?.dataset.state === "released"`)

	require.Equal(t, entryRow{State: "released", Owner: "worker-held", FencingToken: heldToken + 1}, c.row(t, consoleNamespace, heldKey))
	events := c.events(t, consoleNamespace, heldKey)
	require.Equal(t, eventRow{Kind: "force_released", Caller: "platform-admin", Reason: reason}, events[len(events)-1])

	// Where the token is, and where it is not.
	require.Equal(t, c.tokens["admin"], eval[string](b, `sessionStorage.getItem("ledgerd.console.token")`))
	require.Empty(t, eval[string](b, `document.cookie`))
	cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{c.consoleURL("")}})
	require.NoError(t, err)
	require.Empty(t, cookies.Cookies)
	history, err := chromedp.Run(b.ctx, chromedp.NavigationEntries())
	require.NoError(t, err)
	for _, entry := range history.Entries {
		require.NotContains(t, entry.URL, c.tokens["admin"])
	}
	require.NotContains(t, eval[string](b, `location.href`), c.tokens["admin"])
	// The token is the tab's: a new tab of the same browser asks again.
	newTab, cancel := chromedp.NewContext(b.ctx)
	defer cancel()
	require.NoError(t, chromedp.Do(newTab, chromedp.Navigate(c.consoleURL(""))))
	second := &browser{t: t, ctx: newTab}
	second.waitVisible(sel("token-input"))
}

// TestConsoleReaderIsRefused: a reader of the namespace sees the key, but
// its force release is refused by the server (PERMISSION_DENIED, the RPC's
// own authorization), the page shows the refusal, and the row is unchanged.
func TestConsoleReaderIsRefused(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, true)
	heldToken := seedLeases(t, c)
	before := c.events(t, consoleNamespace, heldKey)

	b := newBrowser(t)
	signIn(b, c, "oncall-reader", "oncall-reader")
	openKey(b, c, consoleNamespace, heldKey)
	require.Equal(t, "worker-held", b.text(sel("entry-owner")))
	forceRelease(b, "a reader trying its luck")
	refusal := b.waitText(sel("force-release-error"), "PERMISSION_DENIED")
	require.NotContains(t, b.text(sel("force-release-form")), "Released")
	t.Log("the page shows:", refusal)

	require.Equal(t, entryRow{State: "leased", Owner: "worker-held", FencingToken: heldToken}, c.row(t, consoleNamespace, heldKey))
	require.Equal(t, before, c.events(t, consoleNamespace, heldKey), "no event: nothing changed")
	var refusals int
	require.NoError(t, c.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM events WHERE kind = 'force_released'`).Scan(&refusals))
	require.Zero(t, refusals)
}

// TestConsoleTenantTextIsText: a key, an owner and labels that are HTML
// are shown as text on the entries page, the key page and its timeline:
// no element is made from them, and no script runs (no dialog opens).
func TestConsoleTenantTextIsText(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, false)
	const (
		key   = `<script>alert(1)</script>`
		owner = `<img src=x onerror=alert(2)>`
		label = `<b onmouseover=alert(3)>bold</b>`
	)
	c.reserveWith(t, consoleNamespace, key, owner, time.Hour, map[string]string{"run": label})

	b := newBrowser(t)
	// The page's own elements, before any tenant text is drawn.
	b.open(c.consoleURL("#/namespaces"))
	b.waitVisible(sel("namespaces-table"))
	scripts := eval[int](b, `document.scripts.length`)

	b.open(c.consoleURL("#/ns/" + consoleNamespace + "/entries"))
	b.waitVisible(sel("entry-link"))
	require.Equal(t, key, b.text(sel("entry-link")))
	require.Equal(t, owner, b.text(sel("entry-owner")))
	b.do(chromedp.Click(chromedp.CSS(sel("entry-link"))))
	b.waitVisible(sel("timeline"))
	b.waitVisible(sel("entry-owner"))
	require.Equal(t, key, b.text(sel("key-name")))
	require.Equal(t, owner, b.text(sel("entry-owner")))
	require.Contains(t, b.text(sel("entry-metadata")), label)
	require.Contains(t, b.text(sel("timeline-what")), owner)

	require.Equal(t, scripts, eval[int](b, `document.scripts.length`), "a script element was made")
	require.Zero(t, eval[int](b, `Array.from(document.scripts).filter(s => s.textContent.includes("alert")).length`))
	require.Zero(t, eval[int](b, `document.querySelectorAll("img, b, [onerror], [onmouseover]").length`), "an element was made from tenant text")
	require.Empty(t, b.dialogsOpened())

	require.Equal(t, entryRow{State: "leased", Owner: owner, FencingToken: 1}, c.row(t, consoleNamespace, key))
}

// TestConsoleCrossSitePostIsRefused: a page of another site, in the
// browser of someone who may use the console, posts a force release to
// ledgerd's HTTP port, as a form (which browsers send anywhere without
// asking) and as fetches: the server answers 403 to what reaches it, and
// the row is unchanged. Development mode: no credential stands in the way,
// only the same-origin check.
func TestConsoleCrossSitePostIsRefused(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, false)
	heldToken := seedLeases(t, c)
	target := "http://" + c.httpAddr + "/ledger.v1.LedgerAdminService/ForceRelease"
	body := `{"namespace":"` + consoleNamespace + `","key":"` + heldKey + `","reason":"cross-site"}`

	// The other site: the same machine, under the name localhost, which is
	// another site than 127.0.0.1 to a browser.
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form id="post" method="POST" action="%s" enctype="text/plain">`+
			`<input name='%s' value=''><button id="go">go</button></form>`, target, strings.TrimSuffix(body, `}`)+`,"x":"`)
	}))
	defer attacker.Close()
	attackerURL := strings.Replace(attacker.URL, "127.0.0.1", "localhost", 1)

	b := newBrowser(t)
	b.open(attackerURL)
	b.waitVisible("#go")
	res, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS("#go")))
	require.NoError(t, err)
	require.NotNil(t, res)
	require.Equal(t, target, res.URL)
	require.EqualValues(t, http.StatusForbidden, res.Status, "the form post")

	// fetch: as text/plain without CORS (the browser sends it and hides
	// the answer), and as application/json (the browser asks first).
	b.open(attackerURL)
	b.waitVisible("#go")
	statuses := make(chan int64, 4)
	require.NoError(t, chromedp.Listen(b.ctx, func(ev any) {
		if received, ok := ev.(*network.EventResponseReceived); ok && received.Response.URL == target {
			select {
			case statuses <- received.Response.Status:
			default:
			}
		}
	}))
	outcome := evalPromise[string](b, fmt.Sprintf(`fetch(%s, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: %s})
		.then(() => "sent", e => "refused: " + e)`, jsString(target), jsString(body)))
	require.Equal(t, "sent", outcome, "an opaque answer")
	select {
	case status := <-statuses:
		require.EqualValues(t, http.StatusForbidden, status, "the no-cors fetch")
	case <-b.ctx.Done():
		t.Fatal("no answer to the no-cors fetch")
	}
	outcome = evalPromise[string](b, fmt.Sprintf(`fetch(%s, {method: "POST", headers: {"Content-Type": "application/json"}, body: %s})
		.then(r => "answered " + r.status, e => "refused: " + e)`, jsString(target), jsString(body)))
	require.True(t, strings.HasPrefix(outcome, "refused"), "the JSON fetch: %s", outcome)

	require.Equal(t, entryRow{State: "leased", Owner: "worker-held", FencingToken: heldToken}, c.row(t, consoleNamespace, heldKey))
	require.False(t, slices.ContainsFunc(c.events(t, consoleNamespace, heldKey), func(e eventRow) bool { return e.Kind == "force_released" }))
}

// TestConsoleEventsKindRange: on the Events page, a kind filter other than
// the admin actions, given no start time, lists the last hour only (a
// rare kind over a long range reads every event of it), writes that start
// into the form and says so; the admin actions alone, which have an index
// of their own, are listed over any range, with no start filled in.
func TestConsoleEventsKindRange(t *testing.T) {
	t.Parallel()
	c := startConsoleLedger(t, false)
	const failedKey, releasedKey = "refund-9", "refund-10"
	c.fail(t, consoleNamespace, failedKey, c.reserve(t, consoleNamespace, failedKey, "worker-a", time.Minute), "card_declined", "declined")
	token := c.reserve(t, consoleNamespace, releasedKey, "worker-b", time.Hour)
	_, err := ledgerv1.NewLedgerAdminServiceClient(c.conn).ForceRelease(c.as("admin"), &ledgerv1.ForceReleaseRequest{
		Namespace: consoleNamespace, Key: releasedKey, FencingToken: token, Reason: "host lost"})
	require.NoError(t, err)
	require.Equal(t, []string{"reserved", "failed"}, kindsOf(c.events(t, consoleNamespace, failedKey)))
	require.Equal(t, []string{"reserved", "force_released"}, kindsOf(c.events(t, consoleNamespace, releasedKey)))

	b := newBrowser(t)
	rowsOf := `Array.from(document.querySelectorAll('[data-test="event-row"]'), r => r.dataset.kind)`
	startHoursAgo := `(Date.now() - new Date(document.querySelector('[data-test="filter-start"]').value).getTime()) / 3600000`
	b.open(c.consoleURL("#/ns/" + consoleNamespace + "/events?unsettled=1&kind=failed"))
	b.waitVisible(`[data-test="event-row"][data-kind="failed"]`)
	require.Equal(t, []string{"failed"}, eval[[]string](b, rowsOf))
	require.Equal(t, []string{failedKey}, b.texts(sel("event-key-link")))
	require.Contains(t, b.text(sel("events-default-range")), "Showing one hour")
	require.InDelta(t, 1, eval[float64](b, startHoursAgo), 0.5, "the form's start is the default range's")

	b.open(c.consoleURL("#/ns/" + consoleNamespace + "/events?unsettled=1&kind=force_released"))
	b.waitVisible(`[data-test="event-row"][data-kind="force_released"]`)
	require.Equal(t, []string{"force_released"}, eval[[]string](b, rowsOf))
	require.Equal(t, []string{releasedKey}, b.texts(sel("event-key-link")))
	require.Empty(t, b.texts(sel("events-default-range")))
	require.Empty(t, eval[string](b, `document.querySelector('[data-test="filter-start"]').value`))
}
