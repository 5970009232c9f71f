package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is the path under which Handler serves the console.
const Prefix = "/ui/"

// ContentSecurityPolicy is the policy of every console answer: scripts,
// styles, images and connections from this origin only; no inline script
// or style attribute; no plugins, frames, base URL or form submission.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

// file is one embedded file, read once.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// files are the console's files by their path under Prefix ("" is the
// index).
var files = mustLoad()

func mustLoad() map[string]file {
	root, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	loaded := make(map[string]file)
	err = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		loaded[name] = file{body: body, contentType: contentType(name), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic(err)
	}
	loaded[""] = loaded["index.html"]
	return loaded
}

// contentType is a file's media type by its extension. The system's MIME
// tables are not asked: on some systems they map .js to text/plain, which
// browsers refuse to run as a module under nosniff.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// Handler serves the console: GET (or HEAD) /ui/ is the page, /ui/<file>
// its styles and scripts, /ui redirects to /ui/; anything else under /ui/
// is 404, and other methods are 405. Every answer, errors and the redirect
// included, carries the security headers (see ContentSecurityPolicy).
// Files are revalidated on each load (Cache-Control: no-cache, with an
// ETag), so that a browser never runs the scripts of an older ledgerd
// against a newer one's API.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	header := w.Header()
	header.Set("Content-Security-Policy", ContentSecurityPolicy)
	header.Set("X-Content-Type-Options", "nosniff")
	header.Set("Referrer-Policy", "no-referrer")
	header.Set("X-Frame-Options", "DENY")
	header.Set("Cross-Origin-Opener-Policy", "same-origin")
	header.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		header.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the console's files are read with GET", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	f, found := files[name]
	if !ok || !found {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	header.Set("Content-Type", f.contentType)
	header.Set("Cache-Control", "no-cache")
	header.Set("ETag", f.etag)
	// A zero modification time: the ETag alone decides revalidation.
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
