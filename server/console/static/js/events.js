// events.js is the Events page (#/ns/NAME/events). Placeholder until the
// export lands.
import { h, replace } from "./dom.js";

/** render draws the page into ctx.el. */
export async function render(ctx) {
  replace(ctx.el, h("p", {}, "Events: coming next."));
}
