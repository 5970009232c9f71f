// namespaces.js is the Namespaces page (#/namespaces): every namespace
// (ListNamespaces, paged by name) with its settings, and, from one
// GetNamespace each, its usage against its quotas, its held and expired
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

import { admin } from "./api.js";
import { errorBox, fmtBytes, fmtDuration, fmtPercent, h, hashLink, mapLimit, replace, usage } from "./dom.js";
import { activityFigures } from "./namespace.js";

const PAGE_SIZE = 50;

/** render draws the page into ctx.el. */
export async function render(ctx) {
  const pageToken = ctx.params.get("page") || "";
  replace(ctx.el, h("h1", {}, "Namespaces"), h("p", { class: "muted" }, "Loading…"));
  const list = await admin("ListNamespaces", { pageSize: PAGE_SIZE, pageToken });
  if (!ctx.current()) return;
  const namespaces = list.namespaces || [];
  if (namespaces.length === 0) {
    replace(ctx.el, h("h1", {}, "Namespaces"),
      h("p", { "data-test": "namespaces-empty" }, "No namespace yet. One is created by an admin (CreateNamespace) or, in development mode, by its first Reserve."));
    return;
  }
  const rows = namespaces.map((ns) => {
    const tr = h("tr", { "data-test": "namespace-row", "data-namespace": ns.name },
      h("td", { class: "key" }, h("a", { href: hashLink(["ns", ns.name]), "data-test": "namespace-link" }, ns.name)),
      h("td", {}, `${fmtDuration(ns.defaultLeaseTtl)} / ${fmtDuration(ns.maxLeaseTtl)}`),
      h("td", {}, fmtDuration(ns.retention)),
      h("td", { class: "num" }, ns.maxAttempts ? String(ns.maxAttempts) : "no limit"),
      h("td", { class: "muted", colspan: 5 }, "…"),
      h("td", {},
        h("a", { href: hashLink(["ns", ns.name, "entries"]), "data-test": "ns-entries-link" }, "entries"), " · ",
        h("a", { href: hashLink(["ns", ns.name, "entries"], { stuck: true }), "data-test": "ns-stuck-link" }, "stuck"), " · ",
        h("a", { href: hashLink(["ns", ns.name, "events"]), "data-test": "ns-events-link" }, "events")));
    return { ns, tr };
  });
  const next = list.nextPageToken
    ? h("a", { href: hashLink(["namespaces"], { page: list.nextPageToken }), "data-test": "namespaces-next" }, "Next page →")
    : null;
  replace(ctx.el,
    h("h1", {}, "Namespaces"),
    h("table", { "data-test": "namespaces-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Namespace"), h("th", {}, "Lease TTL default / max"), h("th", {}, "Retention"),
        h("th", { class: "num" }, "Max attempts"), h("th", {}, "Held leases"), h("th", { class: "num" }, "Expired leases"),
        h("th", {}, "Stored bytes"), h("th", { class: "num" }, "Replay ratio"), h("th", { class: "num" }, "Error rate"),
        h("th", {}, ""))),
      h("tbody", {}, rows.map((r) => r.tr))),
    h("p", { class: "note", "data-test": "activity-note" },
      "Replay ratio and error rate are this ledgerd replica's own counts over the last hour (or since it started, if later): other replicas serve their own share."),
    h("div", { class: "pager" }, pageToken ? h("a", { href: "#/namespaces" }, "← First page") : null, next));
  // Fill each row's usage with a GetNamespace, a few at a time.
  await mapLimit(rows, 4, async ({ ns, tr }) => {
    let got;
    try {
      got = await admin("GetNamespace", { name: ns.name });
    } catch (err) {
      if (ctx.current()) tr.children[4].replaceWith(h("td", { colspan: 5 }, errorBox(err, "ns-row-error")));
      return;
    }
    if (!ctx.current()) return;
    const u = got.usage || {};
    const a = activityFigures(got.activity);
    const q = got.namespace || ns;
    tr.children[4].replaceWith(
      h("td", {}, usage(u.heldLeases, q.maxHeldLeases, String, "ns-held-leases")),
      h("td", { class: "num", "data-test": "ns-expired-leases" }, String(Number(u.expiredLeases || 0))),
      h("td", {}, u.storedBytes === undefined || u.storedBytes === null
        ? h("span", { class: "muted", "data-test": "ns-stored-bytes" }, "not counted (no quota)")
        : usage(u.storedBytes, q.maxStoredBytes, fmtBytes, "ns-stored-bytes")),
      h("td", { class: "num", "data-test": "ns-replay-ratio" }, fmtPercent(a.replayRatio)),
      h("td", { class: "num", "data-test": "ns-error-rate" }, fmtPercent(a.errorRate)));
  });
}
