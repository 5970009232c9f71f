// events.js is the Events page (#/ns/NAME/events?…, or #/events for the
// platform's own events, platform admins only): the audit export,
// ListEvents with its filters (time range, kinds, unsettled events) and
// paging, honest about the settling window (settled_until: the newest
// events are left out until their time can no longer be overtaken), and an
// export of every page, built in the browser, as JSON lines or CSV.
//
// data-test attributes:
//   events-filters, filter-start, filter-end, filter-kinds, filter-unsettled, filter-page-size,
//   filter-apply, filter-clear
//   events-table, event-row (data-kind, data-id), event-key-link, event-detail
//   events-empty, events-next, events-first, events-count
//   events-default-range        the note that a kind filter got the default time range
//   settled-until               the settling window, as the RPC reported it
//   export-jsonl, export-csv    export every page with these filters
//   export-status               how many events the export holds
//   export-stop                 stops a running export
//   export-link                 the download of the last export (a blob: URL)

import { admin } from "./api.js";
import { crumbs, errorBox, fmtTime, fromLocalInput, h, hashLink, kindName, localInput, replace } from "./dom.js";

// The event kinds of ledger.v1.EventKind, for the kind filter; an event of
// a kind this list lacks is still listed and exported.
const KINDS = ["reserved", "taken_over", "reclaimed", "heartbeat", "completed", "failed", "released", "purged",
  "refused_stale_token", "refused_fingerprint", "force_released", "reset", "namespace_changed", "token_created",
  "token_revoked", "role_granted", "role_revoked", "namespace_created", "credential_refused", "restore_fenced"];

// The kinds of admin actions. ledgerd lists them through an index of their
// own (its events_admin_idx), so a filter on them alone costs what it
// returns over any time range. A filter on any other kind reads every
// event of the range to find its matches (docs/performance.md, "Console",
// has what an hour and a day cost on a big ledger): without a start time,
// the page asks for the hour before the end only, and says so.
const ADMIN_KINDS = ["force_released", "reset", "namespace_changed", "namespace_created"];
const KIND_DEFAULT_RANGE_MS = 3600 * 1000;

// The most events an export fetches (pages of 1000): beyond it, narrow the
// time range or use ledgerctl, which streams.
const MAX_EXPORT_EVENTS = 200000;

/** render draws the page into ctx.el. */
export async function render(ctx) {
  const ns = ctx.segments[0] === "ns" ? ctx.segments[1] : "";
  const p = ctx.params;
  const filter = {
    start: p.get("start") || "",
    end: p.get("end") || "",
    kinds: p.getAll("kind").filter((k) => KINDS.includes(k)),
    unsettled: p.get("unsettled") === "1",
    pageSize: Number(p.get("size") || 100),
    pageToken: p.get("page") || "",
  };
  const rangeDefaulted = !filter.start && !filter.pageToken && filter.kinds.some((k) => !ADMIN_KINDS.includes(k));
  if (rangeDefaulted) {
    // Written into the form and the page links, so the next pages and an
    // export keep the same range.
    const end = filter.end ? new Date(filter.end).getTime() : Date.now();
    filter.start = new Date(end - KIND_DEFAULT_RANGE_MS).toISOString();
  }
  const path = ns ? ["ns", ns, "events"] : ["events"];
  const exportEl = h("section", {});
  const results = h("section", {}, h("p", { class: "muted" }, "Loading…"));
  replace(ctx.el,
    crumbs(ns, "events"),
    h("h1", {}, ns ? `Events of ${ns}` : "Platform events (tokens, role bindings, credentials, restores)"),
    filterForm(ctx, path, filter),
    rangeDefaulted ? h("p", { class: "note", "data-test": "events-default-range" },
      "Showing one hour: a kind filter reads every event of its time range to find its kinds, so without a start time the page asks for the hour before the end. ",
      "Set “From” to look further back (on a big ledger a long range may run into the request timeout). Force releases, resets and namespace changes alone are indexed and listed over any range.") : null,
    exportEl, results);
  drawExport(exportEl, ns, filter);

  const res = await admin("ListEvents", request(ns, filter, filter.pageSize, filter.pageToken));
  if (!ctx.current()) return;
  const events = res.events || [];
  const base = { ...paramsOf(filter), page: "" };
  replace(results,
    settling(res.settledUntil, filter),
    events.length === 0
      ? h("p", { "data-test": "events-empty" }, filter.pageToken ? "No more events." : "No event matches these filters.")
      : h("table", { "data-test": "events-table" },
        h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Id"), h("th", {}, "At"), h("th", {}, "Kind"), h("th", {}, "Key"),
          h("th", {}, "Owner"), h("th", { class: "num" }, "Token"), h("th", { class: "num" }, "Attempt"), h("th", {}, "Caller"), h("th", {}, "Detail"))),
        h("tbody", {}, events.map((e) => h("tr", { "data-test": "event-row", "data-kind": kindName(e.kind), "data-id": e.id },
          h("td", { class: "num" }, String(e.id)),
          h("td", {}, fmtTime(e.at)),
          h("td", {}, kindName(e.kind)),
          h("td", { class: "key" }, e.key && ns ? h("a", { href: hashLink(["ns", ns, "key", e.key]), "data-test": "event-key-link" }, e.key) : (e.key || "—")),
          h("td", { class: "key" }, e.owner || "—"),
          h("td", { class: "num" }, String(e.fencingToken ?? "0")),
          h("td", { class: "num" }, String(e.attempt ?? 0)),
          h("td", {}, e.caller || "—"),
          h("td", { class: "detail", "data-test": "event-detail" }, e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : ""))))),
    h("div", { class: "pager" },
      h("span", { class: "muted", "data-test": "events-count" }, `${events.length} events on this page`),
      filter.pageToken ? h("a", { href: hashLink(path, base), "data-test": "events-first" }, "← First page") : null,
      res.nextPageToken ? h("a", { href: hashLink(path, { ...base, page: res.nextPageToken }), "data-test": "events-next" }, "Next page →") : null));
}

function request(ns, filter, pageSize, pageToken) {
  const req = {
    namespace: ns,
    kinds: filter.kinds.map((k) => `EVENT_KIND_${k.toUpperCase()}`),
    includeUnsettled: filter.unsettled,
    pageSize,
    pageToken,
  };
  if (filter.start) req.startTime = filter.start;
  if (filter.end) req.endTime = filter.end;
  return req;
}

// settling says where the listing stopped for the settling delay.
function settling(settledUntil, filter) {
  if (settledUntil) {
    return h("p", { class: "note", "data-test": "settled-until" },
      `Settled until ${fmtTime(settledUntil)}: newer events may still be committing with earlier times, so the listing stops there (the server's settling delay). `,
      "They appear on a later load; tick “include unsettled events” to see them now, at the price that an export may then miss an event that commits late.");
  }
  return h("p", { class: "note", "data-test": "settled-until" }, filter.unsettled
    ? "Including unsettled events: the newest events are shown, but an event that commits late with an earlier time may be missing from this listing."
    : "Nothing was left out for settling (the time range ends before the settling window).");
}

function paramsOf(filter) {
  return {
    start: filter.start,
    end: filter.end,
    kind: filter.kinds,
    unsettled: filter.unsettled,
    size: filter.pageSize === 100 ? "" : filter.pageSize,
  };
}

function filterForm(ctx, path, filter) {
  const start = h("input", { type: "datetime-local", step: 1, value: localInput(filter.start), "data-test": "filter-start" });
  const end = h("input", { type: "datetime-local", step: 1, value: localInput(filter.end), "data-test": "filter-end" });
  const kinds = h("select", { multiple: true, size: 6, "data-test": "filter-kinds" },
    KINDS.map((k) => h("option", { value: k, selected: filter.kinds.includes(k) }, k)));
  const unsettled = h("input", { type: "checkbox", checked: filter.unsettled, "data-test": "filter-unsettled" });
  const size = h("select", { "data-test": "filter-page-size" },
    [25, 100, 500, 1000].map((n) => h("option", { value: n, selected: n === filter.pageSize }, String(n))));
  const clear = h("button", { type: "button", "data-test": "filter-clear" }, "Clear");
  const form = h("form", { class: "filters", "data-test": "events-filters" },
    h("label", {}, "From (at or after)", start),
    h("label", {}, "Until (before)", end),
    h("label", {}, "Kinds (none: all)", kinds),
    h("label", { class: "check" }, unsettled, "include unsettled events"),
    h("label", {}, "Page size", size),
    h("button", { type: "submit", class: "primary", "data-test": "filter-apply" }, "Apply"),
    clear);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    ctx.navigate(hashLink(path, paramsOf({
      start: fromLocalInput(start.value),
      end: fromLocalInput(end.value),
      kinds: Array.from(kinds.selectedOptions, (o) => o.value),
      unsettled: unsettled.checked,
      pageSize: Number(size.value),
    })));
  });
  clear.addEventListener("click", () => ctx.navigate(hashLink(path)));
  return form;
}

// drawExport offers the export of every page with the page's filters.
function drawExport(el, ns, filter) {
  const status = h("span", { class: "muted", "data-test": "export-status" });
  const jsonl = h("button", { type: "button", "data-test": "export-jsonl" }, "Export JSON lines");
  const csv = h("button", { type: "button", "data-test": "export-csv" }, "Export CSV");
  const stop = h("button", { type: "button", "data-test": "export-stop", hidden: true }, "Stop");
  const link = h("span", {});
  let stopped = false;
  stop.addEventListener("click", () => { stopped = true; });
  async function run(format) {
    jsonl.disabled = csv.disabled = true;
    stop.hidden = false;
    stopped = false;
    replace(link);
    const events = [];
    let pageToken = "";
    let settledUntil = "";
    try {
      do {
        const res = await admin("ListEvents", request(ns, filter, 1000, pageToken));
        events.push(...(res.events || []));
        pageToken = res.nextPageToken || "";
        settledUntil = settledUntil || res.settledUntil || "";
        status.textContent = `Fetched ${events.length} events…`;
      } while (pageToken && !stopped && events.length < MAX_EXPORT_EVENTS);
    } catch (err) {
      replace(link, errorBox(err, "export-error"));
    }
    const partial = pageToken ? " (stopped before the last page)" : "";
    status.textContent = `Exported ${events.length} events${partial}${settledUntil ? `, settled until ${fmtTime(settledUntil)}` : ""}.`;
    const body = format === "csv" ? toCSV(events) : events.map((e) => JSON.stringify(e)).join("\n") + (events.length ? "\n" : "");
    const blob = new Blob([body], { type: format === "csv" ? "text/csv" : "application/x-ndjson" });
    const url = URL.createObjectURL(blob);
    const name = `ledgerd-events-${ns || "platform"}-${new Date().toISOString().replace(/[:.]/g, "-")}.${format === "csv" ? "csv" : "jsonl"}`;
    const a = h("a", { href: url, download: name, "data-test": "export-link" }, `Download ${name}`);
    replace(link, " ", a);
    a.click();
    jsonl.disabled = csv.disabled = false;
    stop.hidden = true;
  }
  jsonl.addEventListener("click", () => run("jsonl"));
  csv.addEventListener("click", () => run("csv"));
  replace(el, h("div", { class: "actions" }, jsonl, csv, stop, status, link),
    h("p", { class: "note" }, "An export fetches every page with these filters (settled events only, unless unsettled ones are included) and builds the file in this browser; nothing is stored on the server."));
}

const CSV_COLUMNS = ["id", "at", "namespace", "key", "kind", "fencing_token", "owner", "attempt", "caller", "detail"];

/**
 * toCSV writes events as RFC 4180 CSV. A text field that a spreadsheet
 * would take for a formula (=, +, -, @, tab, carriage return first) gets a
 * leading apostrophe: keys and owners are tenants' text. The JSON lines
 * export keeps every value exactly.
 */
export function toCSV(events) {
  const cell = (v, text) => {
    let s = v === null || v === undefined ? "" : String(v);
    if (text && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return `"${s.replace(/"/g, '""')}"`;
  };
  const rows = [CSV_COLUMNS.join(",")];
  for (const e of events) {
    rows.push([
      cell(e.id), cell(e.at), cell(e.namespace, true), cell(e.key, true), cell(kindName(e.kind)), cell(e.fencingToken),
      cell(e.owner, true), cell(e.attempt), cell(e.caller, true), cell(e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : "", true),
    ].join(","));
  }
  return rows.join("\r\n") + "\r\n";
}
