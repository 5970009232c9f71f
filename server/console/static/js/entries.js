// entries.js is the Entries page (#/ns/NAME/entries?…): ListEntries with
// its filters (states, stuck leases, owner, key prefix, updated after and
// before) in the address, so that a filtered view can be shared, and keyset
// paging with next_page_token. Each row links to its key.
//
// data-test attributes:
//   entries-filters             the filter form
//   filter-state-<state>        a state checkbox (leased, completed, failed, released)
//   filter-stuck                stuck leases only (leased, lease ran out, not reclaimed)
//   filter-owner, filter-key-prefix, filter-updated-after, filter-updated-before, filter-page-size
//   filter-apply, filter-clear
//   entries-table, entry-row (data-key: the key), entry-link, entry-state, entry-owner
//   entries-empty               no entry matches
//   entries-next, entries-first paging
//   entries-count               how many rows this page shows

import { admin } from "./api.js";
import { crumbs, fmtTime, fromLocalInput, h, hashLink, localInput, replace, stateBadge } from "./dom.js";

const STATES = ["leased", "completed", "failed", "released"];

/** render draws the page into ctx.el. */
export async function render(ctx) {
  const ns = ctx.segments[1];
  const p = ctx.params;
  const filter = {
    states: p.getAll("state").filter((s) => STATES.includes(s)),
    stuck: p.get("stuck") === "1",
    owner: p.get("owner") || "",
    keyPrefix: p.get("prefix") || "",
    updatedAfter: p.get("after") || "",
    updatedBefore: p.get("before") || "",
    pageSize: Number(p.get("size") || 100),
    pageToken: p.get("page") || "",
  };
  const form = filterForm(ctx, ns, filter);
  const results = h("section", {}, h("p", { class: "muted" }, "Loading…"));
  replace(ctx.el, crumbs(ns, "entries"), h("h1", {}, `Entries of ${ns}`), form, results);

  const request = {
    namespace: ns,
    states: filter.states.map((s) => `STATE_${s.toUpperCase()}`),
    stuck: filter.stuck,
    owner: filter.owner,
    keyPrefix: filter.keyPrefix,
    pageSize: filter.pageSize,
    pageToken: filter.pageToken,
  };
  if (filter.updatedAfter) request.updatedAfter = filter.updatedAfter;
  if (filter.updatedBefore) request.updatedBefore = filter.updatedBefore;
  const res = await admin("ListEntries", request);
  if (!ctx.current()) return;
  const entries = res.entries || [];
  const base = { ...paramsOf(filter), page: "" };
  replace(results,
    entries.length === 0
      ? h("p", { "data-test": "entries-empty" }, filter.pageToken ? "No more entries." : "No entry matches these filters.")
      : h("table", { "data-test": "entries-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "State"), h("th", {}, "Owner"),
          h("th", { class: "num" }, "Token"), h("th", { class: "num" }, "Attempts"), h("th", {}, "Lease expires"), h("th", {}, "Updated"))),
        h("tbody", {}, entries.map((e) => h("tr", { "data-test": "entry-row", "data-key": e.key },
          h("td", { class: "key" }, h("a", { href: hashLink(["ns", ns, "key", e.key]), "data-test": "entry-link" }, e.key)),
          h("td", { "data-test": "entry-state" }, stateBadge(e)),
          h("td", { class: "key", "data-test": "entry-owner" }, e.owner),
          h("td", { class: "num" }, String(e.fencingToken ?? "0")),
          h("td", { class: "num" }, String(e.attempts ?? 0)),
          h("td", {}, e.leaseExpiresAt ? fmtTime(e.leaseExpiresAt) : "—"),
          h("td", {}, fmtTime(e.updatedAt)))))),
    h("div", { class: "pager" },
      h("span", { class: "muted", "data-test": "entries-count" }, `${entries.length} entries on this page`),
      filter.pageToken ? h("a", { href: hashLink(["ns", ns, "entries"], base), "data-test": "entries-first" }, "← First page") : null,
      res.nextPageToken ? h("a", { href: hashLink(["ns", ns, "entries"], { ...base, page: res.nextPageToken }), "data-test": "entries-next" }, "Next page →") : null),
    h("p", { class: "note" }, "Entries are listed in key order; paging is by key, so every entry is listed once even while others are added."));
}

function paramsOf(filter) {
  return {
    state: filter.states,
    stuck: filter.stuck,
    owner: filter.owner,
    prefix: filter.keyPrefix,
    after: filter.updatedAfter,
    before: filter.updatedBefore,
    size: filter.pageSize === 100 ? "" : filter.pageSize,
  };
}

function filterForm(ctx, ns, filter) {
  const checks = STATES.map((s) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "state", value: s, checked: filter.states.includes(s), "data-test": `filter-state-${s}` }), s));
  const stuck = h("input", { type: "checkbox", name: "stuck", checked: filter.stuck, "data-test": "filter-stuck" });
  const owner = h("input", { type: "text", name: "owner", value: filter.owner, "data-test": "filter-owner" });
  const prefix = h("input", { type: "text", name: "prefix", value: filter.keyPrefix, "data-test": "filter-key-prefix" });
  const after = h("input", { type: "datetime-local", step: 1, name: "after", value: localInput(filter.updatedAfter), "data-test": "filter-updated-after" });
  const before = h("input", { type: "datetime-local", step: 1, name: "before", value: localInput(filter.updatedBefore), "data-test": "filter-updated-before" });
  const size = h("select", { name: "size", "data-test": "filter-page-size" },
    [25, 100, 500, 1000].map((n) => h("option", { value: n, selected: n === filter.pageSize }, String(n))));
  const clear = h("button", { type: "button", "data-test": "filter-clear" }, "Clear");
  const form = h("form", { class: "filters", "data-test": "entries-filters" },
    h("fieldset", { class: "states" }, h("legend", {}, "State"), checks),
    h("label", { class: "check" }, stuck, "stuck leases only (ran out, not reclaimed)"),
    h("label", {}, "Owner", owner),
    h("label", {}, "Key prefix", prefix),
    h("label", {}, "Updated at or after", after),
    h("label", {}, "Updated before", before),
    h("label", {}, "Page size", size),
    h("button", { type: "submit", class: "primary", "data-test": "filter-apply" }, "Apply"),
    clear);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    ctx.navigate(hashLink(["ns", ns, "entries"], paramsOf({
      states: checks.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value),
      stuck: stuck.checked,
      owner: owner.value,
      keyPrefix: prefix.value,
      updatedAfter: fromLocalInput(after.value),
      updatedBefore: fromLocalInput(before.value),
      pageSize: Number(size.value),
    })));
  });
  clear.addEventListener("click", () => ctx.navigate(hashLink(["ns", ns, "entries"])));
  return form;
}
