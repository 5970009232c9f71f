// app.js is the console's entry point: it asks WhoAmI who the caller is
// (asking for an API token when ledgerd wants one), then routes the hash
// (#/namespaces, #/ns/NAME, #/ns/NAME/entries, #/ns/NAME/key/KEY,
// #/ns/NAME/events, #/events) to a page module.
//
// data-test attributes of this module and index.html:
//   nav-home, nav-namespaces   the header's links
//   whoami                     the caller's principal and roles
//   sign-out                   forgets the API token of this tab
//   main                       the page's container
//   signin, token-input, token-submit, signin-error   the token form
//   page-error                 a page that could not be loaded (the RPC's refusal)
//   not-found                  an unknown console address

import { admin, RPCError, setToken, setWhoAmI, token } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import * as namespaces from "./namespaces.js";
import * as namespace from "./namespace.js";
import * as entries from "./entries.js";
import * as key from "./key.js";
import * as events from "./events.js";

const main = document.getElementById("main");
const whoami = document.querySelector('[data-test="whoami"]');
const signOut = document.querySelector('[data-test="sign-out"]');
let generation = 0;

/** route parses location.hash into its decoded segments and query parameters. */
function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  let segments;
  try {
    segments = path.split("/").filter((s) => s !== "").map(decodeURIComponent);
  } catch {
    segments = ["?"];
  }
  return { segments, params };
}

function pageFor(segments) {
  const [first, name, sub, ...rest] = segments;
  if (!first || first === "namespaces") return segments.length <= 1 ? namespaces : null;
  if (first === "events" && segments.length === 1) return events;
  if (first !== "ns" || !name) return null;
  if (!sub) return namespace;
  if (sub === "entries" && rest.length === 0) return entries;
  if (sub === "events" && rest.length === 0) return events;
  if (sub === "key" && rest.length === 1) return key;
  return null;
}

async function render() {
  const gen = ++generation;
  const { segments, params } = route();
  const page = pageFor(segments);
  const container = h("div", {});
  replace(main, container);
  if (!page) {
    replace(container, h("p", { "data-test": "not-found" }, "No such page. ", h("a", { href: "#/namespaces" }, "Namespaces")));
    return;
  }
  const ctx = {
    el: container,
    segments,
    params,
    current: () => gen === generation,
    navigate: (hash) => { if (location.hash === hash) render(); else location.hash = hash; },
    reload: () => render(),
  };
  try {
    await page.render(ctx);
  } catch (err) {
    if (ctx.current()) container.appendChild(errorBox(err));
  }
}

function showSignIn(err) {
  whoami.textContent = "";
  signOut.hidden = true;
  const input = h("input", { type: "password", name: "token", autocomplete: "off", spellcheck: "false",
    placeholder: "ldg_…", "data-test": "token-input", required: true });
  const form = h("form", { class: "signin", "data-test": "signin" },
    h("h1", {}, "Sign in"),
    h("p", {}, "This ledgerd asks for credentials. Paste an API token (",
      h("code", {}, "ledgerctl tokens create"), "): it is kept in this tab's session storage only, sent as an ",
      h("code", {}, "Authorization"), " header, and forgotten when the tab closes. Your roles decide what you may see and do, exactly as in the API."),
    h("label", {}, "API token", input),
    h("button", { type: "submit", class: "primary", "data-test": "token-submit" }, "Sign in"),
    err && token() ? errorBox(err, "signin-error") : null);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    start();
  });
  replace(main, form);
  input.focus();
}

function roleName(role) {
  return String(role || "").replace(/^ROLE_/, "").toLowerCase().replace("_", "-");
}

async function start() {
  let me;
  try {
    me = await admin("WhoAmI", {});
  } catch (err) {
    if (err instanceof RPCError && err.code === "UNAUTHENTICATED") {
      showSignIn(err);
      return;
    }
    replace(main, errorBox(err));
    return;
  }
  setWhoAmI(me);
  const roles = (me.bindings || []).map((b) => `${roleName(b.role)} on ${b.namespacePattern}`);
  whoami.textContent = `${me.principal}${roles.length ? " · " + roles.join(", ") : ""}`;
  signOut.hidden = !token();
  render();
}

signOut.addEventListener("click", () => {
  setToken("");
  start();
});
window.addEventListener("hashchange", render);
start();
