package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// screenshotsVariable names the directory where TestConsoleScreenshots
// writes the console's screenshots (`make console-screenshots` sets
// docs/images); without it they go to a temporary directory, and the test
// only checks that each page drew what it is shown for.
const screenshotsVariable = "LEDGER_CONSOLE_SCREENSHOTS"

// The incident of docs/operations.md ("On call with the console"): the
// checkout pipeline is stuck on one invoice, whose worker died mid-way.
const (
	incidentKey       = "invoice-2042"
	incidentWorker    = "etl-worker-3"
	replacementWorker = "etl-worker-7"
	incidentReason    = "etl-worker-3 died (node drained); releasing so the pipeline can retry"
)

// TestConsoleScreenshots walks through the on-call incident of
// docs/operations.md in the console and takes a screenshot of each step,
// at the fixed window size: the namespaces, the stuck leases, the stuck
// key's timeline, the force release's confirmation, the key taken over
// by another worker afterwards, and the namespace's events.
func TestConsoleScreenshots(t *testing.T) {
	t.Parallel()
	dir := os.Getenv(screenshotsVariable)
	if dir == "" {
		dir = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	// In secure mode, as a platform admin (the Namespaces page lists
	// every namespace: ListNamespaces is theirs alone); every heartbeat audited, so
	// that the timeline shows the run of them; leases as short as a second,
	// so that the stuck one runs out as it would.
	c := startConsoleLedgerWith(t, true, map[string]string{"LEDGER_HEARTBEAT_EVENT_INTERVAL": "0s", "LEDGER_MIN_LEASE_TTL": "1s"})
	seedIncident(t, c)

	b := newBrowser(t)
	signIn(b, c, "admin", "platform-admin")
	shoot := func(name string) {
		t.Helper()
		image, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
		require.NoError(t, err)
		config, err := png.DecodeConfig(bytes.NewReader(image))
		require.NoError(t, err, name)
		require.Equal(t, [2]int{consoleWindow.width, consoleWindow.height}, [2]int{config.Width, config.Height}, name)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "console-"+name+".png"), image, 0o644))
	}

	b.open(c.consoleURL("#/namespaces"))
	b.waitFor("every row's usage", `document.querySelectorAll('[data-test="ns-expired-leases"]').length === 3`)
	shoot("namespaces")

	b.do(chromedp.Click(chromedp.CSS(`[data-namespace="` + consoleNamespace + `"] ` + sel("ns-stuck-link"))))
	b.waitText(sel("entry-link"), incidentKey)
	require.Len(t, b.texts(sel("entry-row")), 1)
	shoot("entries-stuck")

	b.do(chromedp.Click(chromedp.CSS(sel("entry-link"))))
	b.waitText(sel("key-name"), incidentKey)
	b.waitText(sel("timeline"), "heartbeats")
	shoot("key-timeline")

	b.waitVisible(sel("force-release-open"))
	b.do(chromedp.Click(chromedp.CSS(sel("force-release-open"))))
	b.waitVisible(sel("force-release-reason"))
	b.do(chromedp.SendKeys(chromedp.CSS(sel("force-release-reason")), incidentReason),
		chromedp.Click(chromedp.CSS(sel("force-release-review"))))
	b.waitVisible(sel("force-release-submit"))
	b.do(chromedp.ScrollIntoView(chromedp.CSS(sel("force-release-form"))))
	shoot("force-release")

	b.do(chromedp.Click(chromedp.CSS(sel("force-release-submit"))))
	b.waitText(sel("force-release-result"), "Released")
	require.Equal(t, "released", c.row(t, consoleNamespace, incidentKey).State)
	events := c.events(t, consoleNamespace, incidentKey)
	require.Equal(t, eventRow{Kind: "force_released", Caller: "platform-admin", Reason: incidentReason}, events[len(events)-1])
	// The pipeline retries: another worker takes the key over and
	// finishes it.
	c.seedAs = "pipeline-worker"
	token := c.reserve(t, consoleNamespace, incidentKey, replacementWorker, time.Minute)
	c.complete(t, consoleNamespace, incidentKey, token, `{"invoice":"2042","charged":true}`)
	b.do(chromedp.Reload())
	b.waitFor("the takeover", `document.querySelector('[data-test="timeline-item"][data-kind="taken_over"]') !== null`)
	b.do(chromedp.ScrollIntoView(chromedp.CSS(`[data-test="timeline-item"][data-kind="taken_over"]`)))
	shoot("key-taken-over")
	require.Equal(t, entryRow{State: "completed", Owner: replacementWorker, FencingToken: token}, c.row(t, consoleNamespace, incidentKey))

	// The audit trail of the incident: what was released, by whom and why,
	// and what happened next (the newest events: unsettled included).
	b.open(c.consoleURL("#/ns/" + consoleNamespace + "/events?unsettled=1&kind=failed&kind=force_released&kind=taken_over"))
	b.waitVisible(sel("events-table"))
	b.waitVisible(`[data-test="event-row"][data-kind="force_released"]`)
	shoot("events")
}

// seedIncident fills the ledger of the screenshots: three namespaces, the
// checkout pipeline's invoices (completed, one failed, a few running) and
// the invoice whose worker died after a few heartbeats, its lease run out.
func seedIncident(t *testing.T, c *consoleLedger) {
	t.Helper()
	labels := map[string]string{"pipeline": "checkout", "run": "2026-12-07T09:00"}
	c.seedAs = "pipeline-worker" // the checkout pipeline's own token
	defer func() { c.seedAs = "admin" }()
	for i := 2030; i < 2050; i++ {
		key := fmt.Sprintf("invoice-%d", i)
		worker := fmt.Sprintf("etl-worker-%d", 1+i%4)
		switch {
		case key == incidentKey:
			token := c.reserveWith(t, consoleNamespace, key, incidentWorker, 2*time.Second, labels)
			for beat := range 4 {
				c.heartbeat(t, consoleNamespace, key, token, 2*time.Second, fmt.Sprintf(`{"page":%d}`, beat+1))
			}
			// Then the worker dies: its lease runs out.
			require.Eventually(t, func() bool {
				var expired bool
				require.NoError(t, c.pool.QueryRow(context.Background(),
					`SELECT lease_expires_at <= now() FROM entries WHERE namespace = $1 AND key = $2`, consoleNamespace, key).Scan(&expired))
				return expired
			}, time.Minute, 50*time.Millisecond, "the lease of %s does not run out", key)
		case i >= 2046: // still running
			c.reserveWith(t, consoleNamespace, key, worker, 10*time.Minute, labels)
		case i == 2037:
			c.fail(t, consoleNamespace, key, c.reserveWith(t, consoleNamespace, key, worker, time.Minute, labels),
				"CARD_DECLINED", "the issuer declined the card")
		default:
			token := c.reserveWith(t, consoleNamespace, key, worker, time.Minute, labels)
			c.complete(t, consoleNamespace, key, token, fmt.Sprintf(`{"invoice":"%d","charged":true}`, i))
		}
	}
	c.seedAs = "admin"
	for i := range 6 {
		key := fmt.Sprintf("welcome-%d", 100+i)
		token := c.reserve(t, "emails", key, "mailer-1", time.Minute)
		if i < 5 {
			c.complete(t, "emails", key, token, "sent")
		}
	}
	c.complete(t, "exports", "daily-2026-12-06", c.reserve(t, "exports", "daily-2026-12-06", "exporter", time.Minute), "s3://exports/daily-2026-12-06.csv")
}
