// entries.js is the Entries page (#/ns/NAME/entries). Placeholder until
// the filters land.
import { h, replace } from "./dom.js";

/** render draws the page into ctx.el. */
export async function render(ctx) {
  replace(ctx.el, h("p", {}, "Entries: coming next."));
}
