// Package console serves ledgerd's ops console: a few pages, embedded in
// the binary, that show the namespaces, the entries, a key's history as a
// timeline and the audit export, and let an admin force-release, reset
// and purge, in a browser, on ledgerd's HTTP port (under /ui/; see
// server.HTTPConfig.DisableConsole).
//
// The console is files only. Its pages call the RPCs that already exist,
// through the HTTP/JSON gateway on the same port (POST
// /ledger.v1.LedgerAdminService/<Method>), with the caller's own
// credentials: an API token that the page keeps in the tab's
// sessionStorage and sends as "Authorization: Bearer" (never a cookie,
// never in a URL), or the client certificate the browser presents over
// HTTPS. There is no authorization path of its own: a reader sees what
// the API shows a reader, and is refused what the API refuses it.
//
// The front end is one static HTML page, one CSS file and ES modules of plain
// JavaScript, without a framework or a build step: the pages are tables,
// lists and forms; what a framework would bring (components, reactivity)
// is not worth a toolchain in the build, a dependency tree to audit, or
// bytes in the binary, for this. Tenant-controlled text (keys, owners,
// metadata, errors, reasons) is put in the DOM only as text
// (textContent, setAttribute), never parsed as HTML.
//
// Every answer under /ui/ carries a strict Content-Security-Policy (only
// this origin's scripts, styles and connections; no inline script or
// style; no frames, forms or base URLs), X-Content-Type-Options: nosniff
// and Referrer-Policy: no-referrer. The HTTP port refuses cross-site
// requests that change state (see server.HTTPHandler), so that a page
// elsewhere cannot drive the gateway with the credentials a browser holds.
package console
