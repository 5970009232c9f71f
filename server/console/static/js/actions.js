// actions.js is the form every admin action goes through: it asks for a
// reason (recorded in the audit event), then shows what the action will
// change and asks to confirm, then calls the RPC and shows its answer or
// its refusal (a reader's PERMISSION_DENIED, a LEASE_LOST when the key
// moved on meanwhile) as the API gave it.
//
// data-test attributes (prefixed by the action's name, e.g.
// "force-release"):
//   <name>-open      the button that opens the form
//   <name>-form      the form
//   <name>-reason    the reason
//   <name>-review    asks to confirm
//   <name>-confirm   the confirmation: what will change
//   <name>-submit    confirms and calls the RPC
//   <name>-cancel    closes the form
//   <name>-result    what the RPC answered
//   <name>-error     the RPC's refusal

import { errorBox, h, replace } from "./dom.js";

/**
 * actionButton returns a button that opens, below itself in host, the form
 * of one action:
 *   name      the data-test prefix
 *   label     the button's text
 *   changes   () => [string]: what the action will change, shown before confirming
 *   run       async (reason) => string: calls the RPC, returns what to show
 *   done      () => void: called after success (e.g. to reload the timeline)
 */
export function actionButton(host, { name, label, changes, run, done }) {
  const open = h("button", { type: "button", class: "danger", "data-test": `${name}-open` }, `${label}…`);
  open.addEventListener("click", () => {
    host.querySelectorAll("form.action").forEach((f) => f.remove());
    host.appendChild(actionForm({ name, label, changes, run, done }));
  });
  return open;
}

function actionForm({ name, label, changes, run, done }) {
  const reason = h("textarea", { name: "reason", maxlength: 1024, required: true, "data-test": `${name}-reason`,
    placeholder: "Why (recorded in the audit trail with your identity)" });
  const status = h("div", {});
  const review = h("button", { type: "submit", class: "primary", "data-test": `${name}-review` }, "Review");
  const cancel = h("button", { type: "button", "data-test": `${name}-cancel` }, "Cancel");
  const form = h("form", { class: "action", "data-test": `${name}-form` },
    h("h2", {}, label),
    h("label", {}, "Reason", reason),
    status,
    h("div", { class: "buttons" }, review, cancel));
  cancel.addEventListener("click", () => form.remove());
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const why = reason.value.trim();
    if (!why) {
      replace(status, h("div", { class: "error", "data-test": `${name}-error` }, "A reason is required: it is recorded in the audit event."));
      return;
    }
    const submit = h("button", { type: "button", class: "danger", "data-test": `${name}-submit` }, `Confirm: ${label.toLowerCase()}`);
    replace(status, h("div", { class: "confirm", "data-test": `${name}-confirm` },
      h("strong", {}, "This will:"),
      h("ul", {}, changes().map((c) => h("li", {}, c))),
      h("div", {}, "Reason: ", h("q", {}, why)),
      h("div", { class: "buttons" }, submit)));
    submit.addEventListener("click", async () => {
      submit.disabled = true;
      review.disabled = true;
      reason.disabled = true;
      try {
        const answer = await run(why);
        replace(status, h("div", { class: "ok", role: "status", "data-test": `${name}-result` }, answer));
        cancel.textContent = "Close";
        if (done) done();
      } catch (err) {
        replace(status, errorBox(err, `${name}-error`));
        review.disabled = false;
        reason.disabled = false;
      }
    });
  });
  queueMicrotask(() => reason.focus());
  return form;
}
