package console_test

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/server/console"
)

// staticFiles reads the console's source files by their path under
// static/: the files that are embedded.
func staticFiles(t *testing.T) map[string]string {
	t.Helper()
	files := make(map[string]string)
	err := filepath.WalkDir("static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := os.ReadFile(path)
		files[filepath.ToSlash(strings.TrimPrefix(path, "static"+string(filepath.Separator)))] = string(body)
		return err
	})
	require.NoError(t, err)
	require.Contains(t, files, "index.html")
	return files
}

// TestEmbeddedFiles: every file of static/ is served under /ui/, as it is
// on disk, with its media type, revalidated by ETag; HEAD works and
// nothing else does.
func TestEmbeddedFiles(t *testing.T) {
	t.Parallel()
	handler := console.Handler()
	for name, body := range staticFiles(t) {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/"+name, nil))
		require.Equal(t, http.StatusOK, rec.Code, name)
		require.Equal(t, body, rec.Body.String(), name)
		require.Equal(t, "no-cache", rec.Header().Get("Cache-Control"), name)
		switch filepath.Ext(name) {
		case ".js":
			require.Equal(t, "text/javascript; charset=utf-8", rec.Header().Get("Content-Type"), name)
		case ".css":
			require.Equal(t, "text/css; charset=utf-8", rec.Header().Get("Content-Type"), name)
		case ".html":
			require.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"), name)
		}
		etag := rec.Header().Get("ETag")
		require.NotEmpty(t, etag)
		again := httptest.NewRequest(http.MethodGet, "/ui/"+name, nil)
		again.Header.Set("If-None-Match", etag)
		rec = httptest.NewRecorder()
		handler.ServeHTTP(rec, again)
		require.Equal(t, http.StatusNotModified, rec.Code, name)
	}

	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), `<script type="module" src="js/app.js"></script>`)

	rec = httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/ui/js/app.js", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Empty(t, rec.Body.String())

	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		rec = httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(method, "/ui/", nil))
		require.Equal(t, http.StatusMethodNotAllowed, rec.Code, method)
		require.Equal(t, console.ContentSecurityPolicy, rec.Header().Get("Content-Security-Policy"))
	}
	for _, path := range []string{"/ui/../go.mod", "/ui/static/index.html", "/ui/js", "/ui/js/", "/uix"} {
		rec = httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, http.StatusNotFound, rec.Code, path)
	}
}

// TestNoHTMLFromStrings: the pages put tenant text in the DOM as text only.
// No script parses a string as HTML (innerHTML, outerHTML,
// insertAdjacentHTML, document.write, DOMParser, eval), no page has an
// inline script, event handler or style attribute (the policy forbids
// them: they would not run, and their absence is checked here rather than
// found in a browser), and every element the browser tests look for by
// data-test is listed at the top of its module.
func TestNoHTMLFromStrings(t *testing.T) {
	t.Parallel()
	forbidden := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|DOMParser|\beval\(|new Function\(|\.style\b|setAttribute\("style"|setAttribute\("on`)
	inlineHTML := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>[^<]+</script>|\sstyle=|\son[a-z]+=|javascript:`)
	dataTest := regexp.MustCompile(`"data-test": "([a-z0-9-]+)"|data-test="([a-z0-9-]+)"`)
	files := staticFiles(t)
	for name, body := range files {
		switch filepath.Ext(name) {
		case ".js":
			require.Empty(t, forbidden.FindAllString(body, -1), name)
			header, _, _ := strings.Cut(body, "\nimport ")
			if name == "js/api.js" {
				continue // no elements
			}
			for _, m := range dataTest.FindAllStringSubmatch(body, -1) {
				require.Contains(t, header, m[1], "%s: data-test %q is not listed in the module's header comment", name, m[1])
			}
		case ".html":
			require.Empty(t, inlineHTML.FindAllString(body, -1), name)
			for _, m := range dataTest.FindAllStringSubmatch(body, -1) {
				require.Contains(t, files["js/app.js"], m[2], "%s: data-test %q is not listed in app.js's header comment", name, m[2])
			}
		}
	}
}
