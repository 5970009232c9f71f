// dom.js builds the console's DOM. Tenant text (keys, owners, metadata,
// errors, reasons) reaches the page only through h()'s string children and
// attribute values, which become text nodes (textContent) and attributes
// (setAttribute): nothing here ever parses a string as HTML.
//
// data-test attributes of the pieces it builds:
//   state                       an entry's state badge (stateBadge)
//   lease-expired               next to it, when the lease has run out
//   page-error                  an RPC's refusal (errorBox; callers may name it otherwise)

import { RPCError } from "./api.js";

/**
 * h creates an element. attrs maps attribute names to values (null and
 * false leave an attribute out, true sets it empty; "on<event>" names a
 * listener). Children are nodes, strings or numbers (added as text), or
 * arrays of them; null and undefined are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value" && "value" in el) {
      el.value = String(value);
    } else if (name === "checked") {
      el.checked = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** replace empties el and appends the children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** fmtTime shows an RFC 3339 timestamp in the browser's time zone, with seconds. */
export function fmtTime(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/** fmtClock shows only the time of day of a timestamp (for ranges within a day). */
export function fmtClock(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/** fmtBytes shows a byte count in B, KiB, MiB or GiB. */
export function fmtBytes(n) {
  const v = Number(n || 0);
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  return `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

/** fmtPercent shows a ratio in [0, 1] as a percentage. */
export function fmtPercent(r) {
  if (r === null || r === undefined || Number.isNaN(r)) return "—";
  return `${(r * 100).toFixed(r < 0.1 ? 1 : 0)} %`;
}

/** stateName turns STATE_LEASED into "leased". */
export function stateName(state) {
  return String(state || "").replace(/^STATE_/, "").toLowerCase();
}

/** kindName turns EVENT_KIND_TAKEN_OVER into "taken_over". */
export function kindName(kind) {
  return String(kind || "").replace(/^EVENT_KIND_/, "").toLowerCase();
}

/** stateBadge shows an entry's state, marking a lease that ran out. */
export function stateBadge(entry) {
  const name = stateName(entry.state);
  const badge = h("span", { class: `state state-${name}`, "data-test": "state" }, name);
  if (entry.leaseExpired) {
    return h("span", {}, badge, " ", h("span", { class: "expired", "data-test": "lease-expired" }, "lease expired"));
  }
  return badge;
}

/**
 * decodeBase64 turns protobuf JSON bytes into a Uint8Array (empty for
 * none).
 */
export function decodeBase64(b64) {
  if (!b64) return new Uint8Array(0);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * preview shows the first bytes of a byte string: as UTF-8 text when it
 * decodes as such, in hex otherwise.
 */
export function preview(bytes, limit = 2048) {
  const head = bytes.subarray(0, limit);
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(head);
  } catch {
    text = Array.from(head.subarray(0, 512), (b) => b.toString(16).padStart(2, "0")).join(" ");
    return { text, binary: true, truncated: bytes.length > 512 };
  }
  return { text, binary: false, truncated: bytes.length > limit };
}

/** hashLink builds a console link from path segments (each encoded) and query parameters. */
export function hashLink(segments, params) {
  let path = "#/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
  if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v === null || v === undefined || v === "" || v === false) continue;
      if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
      else q.set(k, v === true ? "1" : String(v));
    }
    const s = q.toString();
    if (s) path += "?" + s;
  }
  return path;
}

/** fields renders a definition list of [label, value, dataTest] rows. */
export function fields(rows) {
  return h("dl", { class: "fields" }, rows.filter(Boolean).map(([label, value, test]) => [
    h("dt", {}, label),
    h("dd", test ? { "data-test": test } : {}, value === null || value === undefined || value === "" ? "—" : value),
  ]));
}

/** errorBox shows an RPC's refusal (or any error) as text, e.g. "PERMISSION_DENIED: …". */
export function errorBox(err, test = "page-error") {
  const text = err instanceof RPCError ? err.describe() : String(err && err.message ? err.message : err);
  return h("div", { class: "error", role: "alert", "data-test": test }, text);
}

/**
 * mapLimit runs fn over items with at most limit calls at once, keeping
 * the order of the results (each a value or the Error it threw).
 */
export async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i], i);
      } catch (err) {
        results[i] = err instanceof Error ? err : new Error(String(err));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** fmtDuration shows a protobuf JSON duration ("3600s", "0.5s") as "1h", "500ms", "2d 3h". */
export function fmtDuration(d) {
  if (d === null || d === undefined || d === "") return "—";
  let s = parseFloat(String(d));
  if (Number.isNaN(s)) return String(d);
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  if (s > 0 || parts.length === 0) parts.push(`${Number.isInteger(s) ? s : s.toFixed(1)}s`);
  return parts.join(" ");
}

/**
 * usage shows a count against its quota: "3 of 10" with a meter, or the
 * count and "no quota" when the quota is 0.
 */
export function usage(used, quota, format = String, test) {
  const u = Number(used || 0);
  const q = Number(quota || 0);
  const attrs = test ? { "data-test": test } : {};
  if (!q) return h("span", attrs, format(u), h("span", { class: "muted" }, " · no quota"));
  return h("span", attrs,
    h("meter", { min: 0, max: q, value: Math.min(u, q), high: q * 0.8, optimum: 0 }),
    " ", `${format(u)} of ${format(q)}`);
}

/**
 * localInput turns an RFC 3339 timestamp into the value of a
 * datetime-local input (the browser's time zone), and fromLocalInput back.
 */
export function localInput(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** fromLocalInput turns a datetime-local value into RFC 3339 (UTC), or "" for none. */
export function fromLocalInput(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

/** crumbs is the trail above a namespace's pages. */
export function crumbs(ns, ...rest) {
  return h("div", { class: "crumbs" }, h("a", { href: "#/namespaces" }, "Namespaces"), "/ ",
    ns ? [h("a", { href: hashLink(["ns", ns]) }, ns), "/ "] : null, rest);
}
