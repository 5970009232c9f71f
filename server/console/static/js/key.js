// key.js is a key's page (#/ns/NAME/key/KEY): the entry (Lookup: state,
// owner, token, attempts, lease, result preview and size, error,
// checkpoint size, labels), its history as a timeline (GetHistory, every
// page), and the actions on it (ForceRelease of the lease the page shows,
// ResetKey), whose audit events appear in the timeline afterwards.
//
// data-test attributes:
//   key-name                    the heading (the key, as text)
//   entry                       the entry's fields
//   entry-missing               no entry (NOT_FOUND): never reserved, or removed
//   entry-state, entry-owner, entry-token, entry-attempts, entry-lease-expires,
//   entry-result-size, entry-result-preview, entry-error, entry-checkpoint-size,
//   entry-metadata, entry-updated
//   history-truncated           the key has more events than were loaded
//   history-empty               the key has no events
//   timeline, timeline-item …   see timeline.js
//   force-release-*, reset-key-*   the actions (see actions.js)
//   refresh                     reloads the entry and the timeline

import { admin, ledger, RPCError } from "./api.js";
import { actionButton } from "./actions.js";
import { decodeBase64, errorBox, fields, fmtBytes, fmtTime, h, hashLink, preview, replace, stateBadge, stateName } from "./dom.js";
import { timeline } from "./timeline.js";

// How many events the timeline loads at most (pages of 1000).
const MAX_HISTORY_PAGES = 10;

/** render draws the page into ctx.el. */
export async function render(ctx) {
  const ns = ctx.segments[1];
  const key = ctx.segments[3];
  const entryEl = h("section", {}, h("p", { class: "muted" }, "Loading…"));
  const buttonsEl = h("div", {});
  const formsEl = h("div", {});
  const actionsEl = h("section", {}, buttonsEl, formsEl);
  const historyEl = h("section", {});
  const refreshButton = h("button", { type: "button", "data-test": "refresh" }, "Refresh");
  replace(ctx.el,
    h("div", { class: "crumbs" },
      h("a", { href: "#/namespaces" }, "Namespaces"), "/ ",
      h("a", { href: hashLink(["ns", ns]) }, ns), "/ ",
      h("a", { href: hashLink(["ns", ns, "entries"]) }, "entries"), "/"),
    h("h1", { "data-test": "key-name" }, key),
    h("div", { class: "actions" }, refreshButton),
    entryEl, actionsEl,
    h("h2", {}, "History"), historyEl);

  async function refresh() {
    const [entry, history] = await Promise.all([lookup(ns, key), loadHistory(ns, key)]);
    if (!ctx.current()) return;
    drawEntry(entryEl, entry);
    drawActions(buttonsEl, formsEl, ns, key, entry, refresh);
    drawHistory(historyEl, history);
  }
  refreshButton.addEventListener("click", () => refresh().catch((err) => replace(entryEl, errorBox(err))));
  await refresh();
}

// lookup returns the entry, null when there is none, or the refusal.
async function lookup(ns, key) {
  try {
    const res = await ledger("Lookup", { namespace: ns, key });
    return res.entry || null;
  } catch (err) {
    if (err instanceof RPCError && err.code === "NOT_FOUND") return null;
    return err;
  }
}

// loadHistory pages through GetHistory, up to MAX_HISTORY_PAGES pages.
async function loadHistory(ns, key) {
  const events = [];
  let pageToken = "";
  try {
    for (let i = 0; i < MAX_HISTORY_PAGES; i++) {
      const res = await admin("GetHistory", { namespace: ns, key, pageSize: 1000, pageToken });
      events.push(...(res.events || []));
      pageToken = res.nextPageToken || "";
      if (!pageToken) break;
    }
  } catch (err) {
    return { events, error: err, truncated: false };
  }
  return { events, truncated: Boolean(pageToken) };
}

function drawEntry(el, entry) {
  if (entry instanceof Error) {
    replace(el, errorBox(entry));
    return;
  }
  if (!entry) {
    replace(el, h("p", { "data-test": "entry-missing" }, "No entry: this key was never reserved, or its entry and its purge record are gone. Its history, if any, is below."));
    return;
  }
  const result = decodeBase64(entry.result);
  const checkpoint = decodeBase64(entry.checkpoint);
  const resultPreview = result.length ? preview(result) : null;
  const metadata = Object.entries(entry.metadata || {});
  const err = entry.error;
  replace(el, h("div", { "data-test": "entry" }, fields([
    ["State", h("span", { "data-test": "entry-state", "data-state": stateName(entry.state) }, stateBadge(entry))],
    ["Owner", entry.owner, "entry-owner"],
    ["Fencing token", String(entry.fencingToken ?? "0"), "entry-token"],
    ["Attempts", String(entry.attempts ?? 0), "entry-attempts"],
    entry.leaseExpiresAt ? ["Lease expires", fmtTime(entry.leaseExpiresAt), "entry-lease-expires"] : null,
    ["Result", `${fmtBytes(result.length)}${result.length ? "" : " (none)"}`, "entry-result-size"],
    resultPreview ? ["Result preview", h("pre", { class: "preview", "data-test": "entry-result-preview" },
      resultPreview.text, resultPreview.truncated ? "\n… (truncated)" : "", resultPreview.binary ? "\n(binary, shown in hex)" : "")] : null,
    err && (err.code || err.message) ? ["Error", h("span", { "data-test": "entry-error" }, err.code ? `${err.code}: ` : "", err.message || "")] : null,
    ["Checkpoint", fmtBytes(checkpoint.length), "entry-checkpoint-size"],
    metadata.length ? ["Labels", h("span", { "data-test": "entry-metadata" }, metadata.map(([k, v]) => `${k}=${v}`).join(", "))] : null,
    ["Created", fmtTime(entry.createdAt)],
    ["Updated", fmtTime(entry.updatedAt), "entry-updated"],
    entry.finishedAt ? ["Finished", fmtTime(entry.finishedAt)] : null,
    entry.expiresAt ? ["Retention ends", fmtTime(entry.expiresAt)] : null,
    entry.purgedAt ? ["Purged", fmtTime(entry.purgedAt)] : null,
  ])));
}

// drawActions redraws the action buttons; their forms open in forms, which
// a refresh leaves alone so that an action's answer stays on the page.
function drawActions(el, forms, ns, key, entry, refresh) {
  if (!entry || entry instanceof Error || stateName(entry.state) === "purged") {
    replace(el);
    return;
  }
  const token = String(entry.fencingToken ?? "0");
  const buttons = h("div", { class: "actions" });
  if (stateName(entry.state) === "leased") {
    buttons.appendChild(actionButton(forms, {
      name: "force-release",
      label: "Force release",
      changes: () => [
        `End the lease of ${entry.owner} (token ${token}${entry.leaseExpired ? ", already expired" : `, expiring ${fmtTime(entry.leaseExpiresAt)}`}).`,
        "Move the fencing token on: every later call of that holder is refused with LEASE_LOST.",
        "The next Reserve takes the key over with a higher token.",
        `Only that grant: if the key has moved on since this page loaded, nothing changes (LEASE_LOST).`,
      ],
      run: async (reason) => {
        const res = await admin("ForceRelease", { namespace: ns, key, reason, fencingToken: token });
        return res.alreadyReleased ? "That grant had already been released." : `Released: the key is ${stateName(res.entry && res.entry.state)}, token ${res.entry && res.entry.fencingToken}.`;
      },
      done: refresh,
    }));
  }
  buttons.appendChild(actionButton(forms, {
    name: "reset-key",
    label: "Reset key",
    changes: () => [
      `Forget the key's ${stateName(entry.state) === "completed" ? "stored result" : stateName(entry.state) === "failed" ? "stored failure" : "state"} (now ${stateName(entry.state)}, token ${token}, ${entry.attempts ?? 0} attempts): the key becomes released with its attempts back to zero.`,
      stateName(entry.state) === "leased" ? `End the lease of ${entry.owner}: its later calls are refused with LEASE_LOST.` : "Move the fencing token on.",
      "The next Reserve runs the work again. The fingerprint is kept.",
      "Only if the key is still at this token: otherwise nothing changes (LEASE_LOST).",
    ],
    run: async (reason) => {
      const res = await admin("ResetKey", { namespace: ns, key, reason, fencingToken: token });
      return `Reset: the key is ${stateName(res.entry && res.entry.state)}, token ${res.entry && res.entry.fencingToken}.`;
    },
    done: refresh,
  }));
  replace(el, h("h2", {}, "Actions"), buttons);
}

function drawHistory(el, history) {
  replace(el,
    history.error ? errorBox(history.error, "history-error") : null,
    history.events.length === 0 && !history.error ? h("p", { class: "muted", "data-test": "history-empty" }, "No events.") : null,
    history.events.length ? timeline(history.events) : null,
    history.truncated ? h("p", { class: "note", "data-test": "history-truncated" },
      `Showing the first ${history.events.length} events; the key has more (GetHistory pages through them).`) : null);
}
