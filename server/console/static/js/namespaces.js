// namespaces.js is the Namespaces page (#/namespaces): every namespace
// (ListNamespaces, paged by name; a caller who is not a platform admin
// sees the namespaces its role bindings name instead) and, from one
// GetNamespace each, its settings, its usage against its quotas, its held and expired
// leases, and this replica's replay ratio and error rate over the last
// hour.
//
// data-test attributes:
//   namespaces-table            the table
//   namespace-row               one row (data-namespace: its name)
//   namespace-link              the name, linking to the namespace's page
//   ns-held-leases, ns-expired-leases, ns-stored-bytes   usage
//   ns-replay-ratio, ns-error-rate                       activity
//   ns-entries-link, ns-stuck-link, ns-events-link       shortcuts
//   ns-row-error                a GetNamespace refused for this row
//   namespaces-empty            no namespace (yet)
//   namespaces-next             the next page
//   activity-note               what the activity figures cover
//   namespaces-bound            shown instead to a caller that may not list every
//                               namespace (not a platform admin): the namespaces
//                               its role bindings name
//   namespaces-refusal          ListNamespaces' refusal, as the API gave it
//   open-namespace, open-namespace-input, open-namespace-submit   open one by name

import { admin, RPCError, whoAmI } from "./api.js";
import { errorBox, fmtBytes, fmtDuration, fmtPercent, h, hashLink, mapLimit, replace, usage } from "./dom.js";
import { activityFigures } from "./namespace.js";

const PAGE_SIZE = 50;

/** render draws the page into ctx.el. */
export async function render(ctx) {
  const pageToken = ctx.params.get("page") || "";
  replace(ctx.el, h("h1", {}, "Namespaces"), h("p", { class: "muted" }, "Loading…"));
  let names;
  let next = null;
  let refusal = null;
  try {
    const list = await admin("ListNamespaces", { pageSize: PAGE_SIZE, pageToken });
    names = (list.namespaces || []).map((ns) => ns.name);
    if (list.nextPageToken) {
      next = h("a", { href: hashLink(["namespaces"], { page: list.nextPageToken }), "data-test": "namespaces-next" }, "Next page →");
    }
  } catch (err) {
    // ListNamespaces is for platform admins: others see the namespaces
    // their role bindings name.
    if (!(err instanceof RPCError) || err.code !== "PERMISSION_DENIED") throw err;
    refusal = err;
    names = boundNamespaces();
  }
  if (!ctx.current()) return;
  const open = openForm(ctx);
  const intro = refusal
    ? h("div", { class: "note", "data-test": "namespaces-bound" },
      "Listing every namespace is for platform admins (", h("span", { "data-test": "namespaces-refusal" }, refusal.describe()),
      "). These are the namespaces your role bindings name; for a pattern (team-*), open a namespace by name.")
    : null;
  if (names.length === 0) {
    replace(ctx.el, h("h1", {}, "Namespaces"), intro,
      h("p", { "data-test": "namespaces-empty" }, refusal
        ? "None of your role bindings names a namespace exactly."
        : "No namespace yet. One is created by an admin (CreateNamespace) or, in development mode, by its first Reserve."),
      open);
    return;
  }
  const rows = names.map((name) => {
    const tr = h("tr", { "data-test": "namespace-row", "data-namespace": name },
      h("td", { class: "key" }, h("a", { href: hashLink(["ns", name]), "data-test": "namespace-link" }, name)),
      h("td", { class: "muted", colspan: 8 }, "…"),
      h("td", {},
        h("a", { href: hashLink(["ns", name, "entries"]), "data-test": "ns-entries-link" }, "entries"), " · ",
        h("a", { href: hashLink(["ns", name, "entries"], { stuck: true }), "data-test": "ns-stuck-link" }, "stuck"), " · ",
        h("a", { href: hashLink(["ns", name, "events"]), "data-test": "ns-events-link" }, "events")));
    return { name, tr };
  });
  replace(ctx.el,
    h("h1", {}, "Namespaces"),
    intro,
    h("table", { "data-test": "namespaces-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Namespace"), h("th", {}, "Lease TTL default / max"), h("th", {}, "Retention"),
        h("th", { class: "num" }, "Max attempts"), h("th", {}, "Held leases"), h("th", { class: "num" }, "Expired leases"),
        h("th", {}, "Stored bytes"), h("th", { class: "num" }, "Replay ratio (1h)"), h("th", { class: "num" }, "Error rate (1h)"),
        h("th", {}, ""))),
      h("tbody", {}, rows.map((r) => r.tr))),
    h("p", { class: "note", "data-test": "activity-note" },
      "Replay ratio and error rate are this ledgerd replica's own counts over the last hour (or since it started, if later): other replicas serve their own share."),
    h("div", { class: "pager" }, pageToken ? h("a", { href: "#/namespaces" }, "← First page") : null, next),
    open);
  // Fill each row from a GetNamespace, a few at a time.
  await mapLimit(rows, 4, async ({ name, tr }) => {
    let got;
    try {
      got = await admin("GetNamespace", { name });
    } catch (err) {
      if (ctx.current()) tr.children[1].replaceWith(h("td", { colspan: 8 }, errorBox(err, "ns-row-error")));
      return;
    }
    if (!ctx.current()) return;
    const u = got.usage || {};
    const a = activityFigures(got.activity);
    const ns = got.namespace || {};
    tr.children[1].replaceWith(
      h("td", {}, `${fmtDuration(ns.defaultLeaseTtl)} / ${fmtDuration(ns.maxLeaseTtl)}`),
      h("td", {}, fmtDuration(ns.retention)),
      h("td", { class: "num" }, ns.maxAttempts ? String(ns.maxAttempts) : "no limit"),
      h("td", {}, usage(u.heldLeases, ns.maxHeldLeases, String, "ns-held-leases")),
      h("td", { class: "num", "data-test": "ns-expired-leases" }, String(Number(u.expiredLeases || 0))),
      h("td", {}, u.storedBytes === undefined || u.storedBytes === null
        ? h("span", { class: "muted", "data-test": "ns-stored-bytes" }, "not counted (no quota)")
        : usage(u.storedBytes, ns.maxStoredBytes, fmtBytes, "ns-stored-bytes")),
      h("td", { class: "num", "data-test": "ns-replay-ratio" }, fmtPercent(a.replayRatio)),
      h("td", { class: "num", "data-test": "ns-error-rate" }, fmtPercent(a.errorRate)));
  });
}

// boundNamespaces are the namespaces the caller's role bindings name
// exactly (not by a pattern), by name.
function boundNamespaces() {
  const me = whoAmI();
  const names = new Set();
  for (const b of (me && me.bindings) || []) {
    const pattern = b.namespacePattern || "";
    if (pattern && !pattern.includes("*")) names.add(pattern);
  }
  return [...names].sort();
}

// openForm opens a namespace's page by name.
function openForm(ctx) {
  const input = h("input", { type: "text", name: "namespace", required: true, "data-test": "open-namespace-input" });
  const form = h("form", { class: "filters", "data-test": "open-namespace" },
    h("label", {}, "Open a namespace by name", input),
    h("button", { type: "submit", "data-test": "open-namespace-submit" }, "Open"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (input.value.trim()) ctx.navigate(hashLink(["ns", input.value.trim()]));
  });
  return form;
}
