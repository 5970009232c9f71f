// Package versions keeps the one release version of ledgerd and its three
// clients in step: the top-level VERSION file is the source, and Places
// lists every other file that states it. A test fails when one of them
// differs from VERSION; `make set-version V=x.y.z` rewrites them all
// (cmd/set-version).
package versions

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Place is one statement of the version in the repository: the single match
// of Pattern, whose first group is the version, among the files that Glob
// (relative to the repository's root) names. The file may move within the
// glob (a client reorganising its sources), but exactly one match must
// remain, so that no copy is left behind.
type Place struct {
	// Name says what the place is, for messages.
	Name    string
	Glob    string
	Pattern *regexp.Regexp
}

// File is VERSION, the source of the version.
const File = "VERSION"

// Places lists every place that states the version, VERSION first.
var Places = []Place{
	{"VERSION", File, regexp.MustCompile(`\A([^\s]+)\s*\z`)},
	{"the Python package (pyproject.toml)", "clients/python/pyproject.toml", regexp.MustCompile(`(?m)^version = "([^"]+)"$`)},
	{"the Python client's __version__", "clients/python/src/ledgerd/*.py", regexp.MustCompile(`(?m)^__version__(?:: str)? = "([^"]+)"$`)},
	{"the TypeScript package (package.json)", "clients/typescript/package.json", regexp.MustCompile(`(?m)^  "version": "([^"]+)",$`)},
	{"the TypeScript lock file's own version", "clients/typescript/package-lock.json", regexp.MustCompile(`(?m)^  "version": "([^"]+)",$`)},
	{"the TypeScript lock file's root package", "clients/typescript/package-lock.json", regexp.MustCompile(`(?m)^    "": \{\n(?:      .*\n)*?      "version": "([^"]+)",$`)},
	{"the TypeScript client's VERSION constant", "clients/typescript/src/*.ts", regexp.MustCompile(`(?m)^export const VERSION(?:: string)? = ["']([^"']+)["'];?$`)},
	{"the Go client's Version constant", "clients/go/ledgerclient/*.go", regexp.MustCompile(`(?m)^(?:const |\t)Version(?: string)? = "([^"]+)"$`)},
	{"the Helm chart's appVersion", "deploy/helm/ledgerd/Chart.yaml", regexp.MustCompile(`(?m)^appVersion: "([^"]+)"$`)},
	// A consumer of the Go client resolves the generated API at the version
	// the client's go.mod requires (the replace directives are the
	// repository's own), so a release must require its own tag.
	{"the Go client's requirement of the generated API (clients/go/go.mod)", "clients/go/go.mod", regexp.MustCompile(`(?m)^\tgithub\.com/ledgerd/ledgerd/gen v([^\s]+)$`)},
	{"ledgerd's requirement of the generated API (go.mod)", "go.mod", regexp.MustCompile(`(?m)^\tgithub\.com/ledgerd/ledgerd/gen v([^\s]+)$`)},
	{"ledgerd's requirement of the Go client (go.mod)", "go.mod", regexp.MustCompile(`(?m)^\tgithub\.com/ledgerd/ledgerd/clients/go v([^\s]+)$`)},
}

// release is the form of a version that set-version writes: a plain
// MAJOR.MINOR.PATCH, which every packaging system (PEP 440, npm, Go
// modules, Helm) reads alike.
var release = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

// Validate fails unless version is MAJOR.MINOR.PATCH.
func Validate(version string) error {
	if !release.MatchString(version) {
		return fmt.Errorf("version %q: must be MAJOR.MINOR.PATCH, such as 0.2.0", version)
	}
	return nil
}

// Found is a place's version and the file that states it.
type Found struct {
	Place   Place
	File    string // relative to the root
	Version string
	// span is the version's byte range in the file.
	span [2]int
}

// Find reads every place under root. It fails, naming the place, when a
// place has no match or more than one.
func Find(root string) ([]Found, error) {
	var found []Found
	for _, p := range Places {
		f, err := p.find(root)
		if err != nil {
			return nil, err
		}
		found = append(found, f)
	}
	return found, nil
}

func (p Place) find(root string) (Found, error) {
	files, err := filepath.Glob(filepath.Join(root, p.Glob))
	if err != nil {
		return Found{}, err
	}
	var hits []Found
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return Found{}, err
		}
		rel, err := filepath.Rel(root, file)
		if err != nil {
			return Found{}, err
		}
		for _, m := range p.Pattern.FindAllSubmatchIndex(data, -1) {
			hits = append(hits, Found{Place: p, File: rel, Version: string(data[m[2]:m[3]]), span: [2]int{m[2], m[3]}})
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		return Found{}, fmt.Errorf("%s: no match of %s in %s", p.Name, p.Pattern, p.Glob)
	default:
		var where []string
		for _, h := range hits {
			where = append(where, h.File)
		}
		return Found{}, fmt.Errorf("%s: %d matches of %s (in %s): exactly one must state the version", p.Name, len(hits), p.Pattern, strings.Join(where, ", "))
	}
}

// Check fails, naming every place that differs, unless every place under
// root states the version in VERSION.
func Check(root string) error {
	found, err := Find(root)
	if err != nil {
		return err
	}
	want := found[0].Version
	var wrong []string
	for _, f := range found[1:] {
		if f.Version != want {
			wrong = append(wrong, fmt.Sprintf("%s (%s) says %s", f.Place.Name, f.File, f.Version))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("VERSION says %s, but %s: run 'make set-version V=%s'", want, strings.Join(wrong, "; "), want)
	}
	return nil
}

// Set writes version into every place under root, changing nothing else.
// It changes no file unless every place is found.
func Set(root, version string) error {
	if err := Validate(version); err != nil {
		return err
	}
	found, err := Find(root)
	if err != nil {
		return err
	}
	// Places in one file are rewritten from the end, so that the earlier
	// spans stay right.
	byFile := map[string][]Found{}
	var order []string
	for _, f := range found {
		if _, seen := byFile[f.File]; !seen {
			order = append(order, f.File)
		}
		byFile[f.File] = append(byFile[f.File], f)
	}
	// The files are written through an os.Root, so that Set cannot write
	// outside root whatever the globs match.
	dir, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer dir.Close()
	for _, file := range order {
		data, err := dir.ReadFile(file)
		if err != nil {
			return err
		}
		hits := byFile[file]
		slices.SortFunc(hits, func(a, b Found) int { return a.span[0] - b.span[0] })
		for i := len(hits) - 1; i >= 0; i-- {
			h := hits[i]
			data = append(data[:h.span[0]:h.span[0]], append([]byte(version), data[h.span[1]:]...)...)
		}
		info, err := dir.Stat(file)
		if err != nil {
			return err
		}
		if err := dir.WriteFile(file, data, info.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}
