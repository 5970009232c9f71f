// namespace.js is a namespace's page (#/ns/NAME): its settings
// (GetNamespace), its usage against its quotas, its leases held and
// expired, this replica's activity over the last hour, links to its
// entries and events, and the PurgeExpired action.
//
// data-test attributes:
//   namespace-name              the heading
//   namespace-settings          the settings list
//   ns-held-leases, ns-expired-leases, ns-stored-bytes   usage
//   ns-reserves, ns-replay-ratio, ns-calls, ns-error-rate, ns-activity-window   activity
//   activity-note               what the activity figures cover
//   ns-entries-link, ns-stuck-link, ns-events-link       shortcuts
//   key-search, key-search-input, key-search-submit      open a key by name
//   purge-expired-*             the PurgeExpired action (see actions.js)

import { admin } from "./api.js";
import { actionButton } from "./actions.js";
import { fields, fmtBytes, fmtDuration, fmtPercent, fmtTime, h, hashLink, replace, usage } from "./dom.js";

/**
 * activityFigures turns a NamespaceActivity (JSON) into ratios: the replay
 * ratio (replayed Reserves / Reserves) and the error rate (failed calls /
 * calls), null when there was nothing to divide.
 */
export function activityFigures(activity) {
  const a = activity || {};
  const reserves = Number(a.reserves || 0);
  const calls = Number(a.calls || 0);
  return {
    reserves,
    calls,
    replays: Number(a.replays || 0),
    errors: Number(a.errors || 0),
    window: a.window,
    replayRatio: reserves ? Number(a.replays || 0) / reserves : null,
    errorRate: calls ? Number(a.errors || 0) / calls : null,
  };
}

/** render draws the page into ctx.el. */
export async function render(ctx) {
  const name = ctx.segments[1];
  replace(ctx.el, crumbs(name), h("h1", { "data-test": "namespace-name" }, name), h("p", { class: "muted" }, "Loading…"));
  const got = await admin("GetNamespace", { name });
  if (!ctx.current()) return;
  const ns = got.namespace || {};
  const u = got.usage || {};
  const a = activityFigures(got.activity);
  const actions = h("div", {});
  const keyInput = h("input", { type: "text", name: "key", placeholder: "key", "data-test": "key-search-input", required: true });
  const keyForm = h("form", { class: "filters", "data-test": "key-search" },
    h("label", {}, "Open a key", keyInput),
    h("button", { type: "submit", "data-test": "key-search-submit" }, "Open"));
  keyForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (keyInput.value) ctx.navigate(hashLink(["ns", name, "key", keyInput.value]));
  });
  replace(ctx.el,
    crumbs(name),
    h("h1", { "data-test": "namespace-name" }, name),
    h("p", {},
      h("a", { href: hashLink(["ns", name, "entries"]), "data-test": "ns-entries-link" }, "Entries"), " · ",
      h("a", { href: hashLink(["ns", name, "entries"], { stuck: true }), "data-test": "ns-stuck-link" }, "Stuck leases"), " · ",
      h("a", { href: hashLink(["ns", name, "events"]), "data-test": "ns-events-link" }, "Events")),
    keyForm,
    h("div", { class: "cards" },
      h("section", { class: "card" }, h("h2", {}, "Usage"), fields([
        ["Held leases", usage(u.heldLeases, ns.maxHeldLeases, String, "ns-held-leases")],
        ["Expired leases (not yet taken over)", String(Number(u.expiredLeases || 0)), "ns-expired-leases"],
        ["Stored bytes", u.storedBytes === undefined || u.storedBytes === null
          ? h("span", { class: "muted", "data-test": "ns-stored-bytes" }, "not counted: the namespace has no max_stored_bytes quota")
          : usage(u.storedBytes, ns.maxStoredBytes, fmtBytes, "ns-stored-bytes")],
      ])),
      h("section", { class: "card" }, h("h2", {}, "Activity on this replica"), fields([
        ["Window", a.window ? `last ${fmtDuration(a.window)}` : "—", "ns-activity-window"],
        ["Reserves", String(a.reserves), "ns-reserves"],
        ["Replay ratio", a.replayRatio === null ? "—" : `${fmtPercent(a.replayRatio)} (${a.replays} replayed)`, "ns-replay-ratio"],
        ["Calls", String(a.calls), "ns-calls"],
        ["Error rate", a.errorRate === null ? "—" : `${fmtPercent(a.errorRate)} (${a.errors} answered with an error)`, "ns-error-rate"],
      ]), h("p", { class: "note", "data-test": "activity-note" },
        "Counted by this ledgerd replica only (the events its /metrics counts), over the window shown: other replicas serve their own share of the calls.")),
      h("section", { class: "card" }, h("h2", {}, "Settings"), h("div", { "data-test": "namespace-settings" }, fields([
        ["Default lease TTL", fmtDuration(ns.defaultLeaseTtl)],
        ["Max lease TTL", fmtDuration(ns.maxLeaseTtl)],
        ["Max result bytes", fmtBytes(ns.maxResultBytes)],
        ["Retention", fmtDuration(ns.retention)],
        ["Event retention", fmtDuration(ns.eventRetention)],
        ["Max attempts", ns.maxAttempts ? String(ns.maxAttempts) : "no limit"],
        ["Max held leases", Number(ns.maxHeldLeases || 0) ? String(ns.maxHeldLeases) : "no quota"],
        ["Max stored bytes", Number(ns.maxStoredBytes || 0) ? fmtBytes(ns.maxStoredBytes) : "no quota"],
        ["Created", fmtTime(ns.createdAt)],
        ["Settings changed", fmtTime(ns.updatedAt)],
      ])))),
    h("h2", {}, "Actions"),
    actions);
  actions.appendChild(h("div", { class: "actions" }, actionButton(actions, {
    name: "purge-expired",
    label: "Purge expired entries",
    changes: () => [
      `Remove the completed and failed entries of ${name} whose retention (${fmtDuration(ns.retention)}) has elapsed, now rather than at the sweeper's next pass.`,
      "Each removal writes a purged event; a later Reserve of a purged key runs its work again.",
      "Leased and released entries are not touched.",
    ],
    run: async (reason) => {
      const res = await admin("PurgeExpired", { namespace: name, reason });
      return `Purged ${Number(res.purgedEntries || 0)} entries.`;
    },
  })));
}

function crumbs(name) {
  return h("div", { class: "crumbs" }, h("a", { href: "#/namespaces" }, "Namespaces"), "/ ", name);
}
