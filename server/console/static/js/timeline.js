// timeline.js turns a key's audit events (GetHistory, oldest first) into
// the timeline of the key page: runs of heartbeats are summarised in one
// line ("12 heartbeats 10:02:05–10:05:41"), takeovers name the previous
// owner, admin actions their caller and reason.
//
// data-test attributes:
//   timeline                    the list
//   timeline-item               one item (data-kind: the event kind, e.g.
//                               "force_released", or "heartbeats" for a run)
//   timeline-when, timeline-what, timeline-detail   its parts
//   timeline-reason             an admin action's reason
//   timeline-caller             who made the call (admin actions)

import { fmtBytes, fmtClock, fmtTime, h, kindName } from "./dom.js";

const ADMIN_KINDS = new Set(["force_released", "reset", "purged"]);

/** groupEvents folds consecutive heartbeats of one token into runs. */
export function groupEvents(events) {
  const items = [];
  for (const ev of events) {
    const kind = kindName(ev.kind);
    const last = items[items.length - 1];
    if (kind === "heartbeat" && last && last.kind === "heartbeats" && last.token === ev.fencingToken) {
      last.count++;
      last.last = ev;
      continue;
    }
    if (kind === "heartbeat") {
      items.push({ kind: "heartbeats", token: ev.fencingToken, count: 1, first: ev, last: ev });
      continue;
    }
    items.push({ kind, event: ev });
  }
  return items;
}

function detailOf(ev) {
  return (ev && ev.detail) || {};
}

function describe(item) {
  if (item.kind === "heartbeats") {
    const { first, last, count } = item;
    const span = count === 1 ? fmtClock(first.at) : `${fmtClock(first.at)}–${fmtClock(last.at)}`;
    return {
      what: `${count} heartbeat${count === 1 ? "" : "s"} ${span}`,
      detail: [`owner ${first.owner}`, `token ${first.fencingToken}`],
      cls: "heartbeat",
    };
  }
  const ev = item.event;
  const d = detailOf(ev);
  const by = ev.owner ? ` by ${ev.owner}` : "";
  switch (item.kind) {
    case "reserved":
      return { what: `reserved${by}`, detail: [`token ${ev.fencingToken}`, `attempt ${ev.attempt}`] };
    case "taken_over":
      return { what: `taken over${by}`, detail: [`previous owner ${d.previous_owner ?? "—"}`, `token ${d.previous_token ?? "?"} → ${ev.fencingToken}`, `attempt ${ev.attempt}`] };
    case "reclaimed":
      return { what: `reclaimed${by} (the lease had expired)`, detail: [`previous owner ${d.previous_owner ?? "—"}`, `token ${d.previous_token ?? "?"} → ${ev.fencingToken}`, `attempt ${ev.attempt}`] };
    case "completed":
      return { what: `completed${by}`, detail: [`token ${ev.fencingToken}`, d.result_bytes !== undefined ? `result ${fmtBytes(d.result_bytes)}` : null], cls: "completed" };
    case "failed": {
      const permanent = d.retryable === false || d.attempts_exhausted;
      return {
        what: `failed${by}${permanent ? " (permanently)" : " (retryable)"}`,
        detail: [d.code ? `code ${d.code}` : null, d.message !== undefined ? `message: ${d.message}` : null,
          d.attempts_exhausted ? "max attempts reached" : null, `token ${ev.fencingToken}`],
        cls: "failed",
      };
    }
    case "released":
      return { what: `released${by}`, detail: [`token ${ev.fencingToken}`] };
    case "purged":
      return { what: "purged (retention)", detail: [ev.caller ? `by ${ev.caller}` : null], cls: "admin" };
    case "force_released":
      return { what: `force-released by ${ev.caller}`, detail: [`previous owner ${d.previous_owner ?? ev.owner ?? "—"}`, `token now ${ev.fencingToken}`], reason: d.reason, caller: ev.caller, cls: "admin" };
    case "reset":
      return { what: `reset by ${ev.caller}`, detail: [`previous state ${d.previous_state ?? "—"}`, `token now ${ev.fencingToken}`], reason: d.reason, caller: ev.caller, cls: "admin" };
    case "refused_stale_token":
      return { what: `refused ${d.operation ?? "call"} with a stale token${by}`, detail: [`token ${ev.fencingToken}`, `current token ${d.current_token ?? "?"}`, `state ${d.current_state ?? "?"}`, `holder ${d.current_owner ?? "—"}`], cls: "refused" };
    case "refused_fingerprint":
      return { what: `refused ${d.operation ?? "call"}: different fingerprint${by}`, detail: [`current token ${d.current_token ?? "?"}`, `holder ${d.current_owner ?? "—"}`], cls: "refused" };
    default:
      return { what: item.kind.replace(/_/g, " ") + by, detail: Object.entries(d).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`) };
  }
}

/** timeline renders the grouped events as an ordered list, oldest first. */
export function timeline(events) {
  const items = groupEvents(events);
  return h("ol", { class: "timeline", "data-test": "timeline" }, items.map((item) => {
    const at = item.kind === "heartbeats" ? item.first.at : item.event.at;
    const text = describe(item);
    const cls = text.cls || (ADMIN_KINDS.has(item.kind) ? "admin" : "");
    return h("li", { class: cls ? `kind-${cls}` : null, "data-test": "timeline-item", "data-kind": item.kind },
      h("span", { class: "when", "data-test": "timeline-when" }, fmtTime(at)),
      h("span", { class: "what", "data-test": "timeline-what" }, text.what),
      text.reason !== undefined ? h("span", {}, "reason: ", h("q", { "data-test": "timeline-reason" }, text.reason)) : null,
      text.caller !== undefined ? h("span", { class: "muted" }, " · caller ", h("span", { "data-test": "timeline-caller" }, text.caller)) : null,
      h("span", { class: "detail", "data-test": "timeline-detail" }, text.detail.filter((x) => x !== null && x !== undefined).join(" · ")));
  }));
}
