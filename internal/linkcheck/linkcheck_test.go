package linkcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// writeTree writes files (slash paths relative to the root) under a fresh
// temporary directory and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, text := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func problemStrings(problems []Problem) []string {
	out := []string{}
	for _, p := range problems {
		out = append(out, p.String())
	}
	return out
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		exclude []string
		want    []string
	}{{
		name: "relative links to files and directories resolve",
		files: map[string]string{
			"README.md":         "See [the guide](docs/guide.md), [docs](docs/), [docs](docs) and [code](src/main.go).\n",
			"docs/guide.md":     "Back to the [README](../README.md) and [itself](./guide.md), the [root](..).\n",
			"src/main.go":       "package main\n",
			"docs/img/logo.png": "png",
		},
	}, {
		name: "a missing target fails",
		files: map[string]string{
			"README.md": "# Title\n\nA [missing](docs/missing.md) guide.\n",
		},
		want: []string{"README.md:3: docs/missing.md: docs/missing.md does not exist"},
	}, {
		name: "a path that climbs out of the repository fails, even to a real place",
		files: map[string]string{
			"README.md":     "The [note](../outside/NOTES.md).\n",
			"docs/guide.md": "The [note](../../outside/NOTES.md), and [back in](../../repo/README.md).\n",
		},
		want: []string{
			"README.md:1: ../outside/NOTES.md: points outside the repository",
			"docs/guide.md:1: ../../outside/NOTES.md: points outside the repository",
			"docs/guide.md:1: ../../repo/README.md: points outside the repository",
		},
	}, {
		name: "anchors must match a heading of the target",
		files: map[string]string{
			"README.md":      "[ok](docs/design.md#error-model), [bad](docs/design.md#errors), [top](docs/design.md#design)\n",
			"docs/design.md": "# Design\n\n## Error model\n\nText.\n",
		},
		want: []string{"README.md:1: docs/design.md#errors: no heading of docs/design.md has the anchor #errors"},
	}, {
		name: "an anchor into the file itself",
		files: map[string]string{
			"README.md": "# Guide\n\nSee [below](#the-end) and [nowhere](#the-middle).\n\n## The end\n",
		},
		want: []string{"README.md:3: #the-middle: no heading of README.md has the anchor #the-middle"},
	}, {
		name: "repeated headings are numbered",
		files: map[string]string{
			"README.md": "## Usage\n\n## Usage\n\n## Usage\n\n[a](#usage) [b](#usage-1) [c](#usage-2) [d](#usage-3)\n",
		},
		want: []string{"README.md:7: #usage-3: no heading of README.md has the anchor #usage-3"},
	}, {
		name: "GitHub's slug rules: punctuation, code, emphasis, links",
		files: map[string]string{
			"a.md": "## What's new? (v2.0)\n" +
				"## The `do(ns, key)` helper\n" +
				"## **Bold** and _moved_ snake_case\n" +
				"## See [the guide](b.md) #\n" +
				"## Ünïcode — dashes -- kept\n" +
				"Setext heading\n" +
				"--------------\n" +
				"<a name=\"custom-anchor\"></a>\n",
			"b.md": "[1](a.md#whats-new-v20) [2](a.md#the-dons-key-helper) [3](a.md#bold-and-moved-snake_case) " +
				"[4](a.md#see-the-guide) [5](a.md#ünïcode--dashes----kept) [6](a.md#%C3%BCn%C3%AFcode--dashes----kept) " +
				"[7](a.md#setext-heading) [8](a.md#custom-anchor) [9](a.md#Setext-Heading)\n",
		},
		want: []string{"b.md:1: a.md#Setext-Heading: no heading of a.md has the anchor #Setext-Heading"},
	}, {
		name: "absolute URLs are not checked",
		files: map[string]string{
			"README.md": "[a](https://example.com/missing.md) [b](http://example.com) [c](mailto:ops@example.com) [d](//cdn.example.com/x.png)\n\n[e]: https://example.com/#nothing\n",
		},
	}, {
		name: "links in fenced code blocks and code spans are ignored",
		files: map[string]string{
			"README.md": "```md\n[a](missing-a.md)\n```\n\n" +
				"~~~\n[b](missing-b.md)\n```\nstill code\n~~~\n\n" +
				"- a list with a fence:\n\n  ````\n  [c](missing-c.md)\n  ```\n  ````\n\n" +
				"Text `[d](missing-d.md)` and ``[e](missing-e.md)`` and a code span\nthat wraps `[f](missing-f.md)\nover lines` ends.\n\n" +
				"[g](missing-g.md)\n",
		},
		want: []string{"README.md:22: missing-g.md: missing-g.md does not exist"},
	}, {
		name: "reference definitions are checked, footnotes are not links",
		files: map[string]string{
			"README.md": "Read [the guide][guide] and [the spec][spec].[^1]\n\n" +
				"[guide]: docs/guide.md\n" +
				"  [spec]: <docs/spec.md> \"The spec\"\n" +
				"[^1]: A footnote, not a link.\n",
			"docs/guide.md": "# Guide\n",
		},
		want: []string{"README.md:4: docs/spec.md: docs/spec.md does not exist"},
	}, {
		name: "images are links too",
		files: map[string]string{
			"README.md":    "![logo](img/logo.png) ![chart](img/chart.svg \"the chart\")\n[![badge](img/logo.png)](docs/missing.md)\n",
			"img/logo.png": "png",
		},
		want: []string{
			"README.md:1: img/chart.svg: img/chart.svg does not exist",
			"README.md:2: docs/missing.md: docs/missing.md does not exist",
		},
	}, {
		name: "titles, angle brackets, percent-encoding, queries and parentheses",
		files: map[string]string{
			"README.md": "[a](docs/a.md \"title\") [b](<docs/my file.md>) [c](docs/my%20file.md) [d](docs/a.md?plain=1#top) " +
				"[e](docs/f(1).md) [f](docs/%zz.md)\n",
			"docs/a.md":       "# Top\n",
			"docs/my file.md": "x\n",
			"docs/f(1).md":    "x\n",
		},
		want: []string{"README.md:1: docs/%zz.md: malformed percent-encoding"},
	}, {
		name: "a path from the repository root, and anchors into other files",
		files: map[string]string{
			"docs/guide.md": "[a](/src/main.go#L3) [b](/README.md#intro) [c](/missing.go)\n",
			"src/main.go":   "package main\n",
			"README.md":     "# Intro\n",
		},
		want: []string{"docs/guide.md:1: /missing.go: missing.go does not exist"},
	}, {
		name: "line numbers of links that wrap",
		files: map[string]string{
			"README.md": "First line,\nsecond with [a link\nthat wraps](missing-1.md), and\n[another](\nmissing-2.md).\n\n> A quote with [a link](missing-3.md).\n",
		},
		want: []string{
			"README.md:3: missing-1.md: missing-1.md does not exist",
			"README.md:5: missing-2.md: missing-2.md does not exist",
			"README.md:7: missing-3.md: missing-3.md does not exist",
		},
	}, {
		name: "escaped brackets are text",
		files: map[string]string{
			"README.md": "Not a link: \\[x\\](missing.md).\n",
		},
	}, {
		name:    "node_modules and excluded directories are not checked",
		exclude: []string{"gen/", "clients/ts/src/gen"},
		files: map[string]string{
			"node_modules/pkg/README.md":     "[x](missing.md)\n",
			"clients/ts/node_modules/a.md":   "[x](missing.md)\n",
			"gen/api.md":                     "[x](missing.md)\n",
			"clients/ts/src/gen/README.md":   "[x](missing.md)\n",
			"clients/ts/src/general/note.md": "[x](missing.md)\n",
		},
		want: []string{"clients/ts/src/general/note.md:1: missing.md: clients/ts/src/general/missing.md does not exist"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo, err := LoadDir(writeTree(t, tt.files))
			if err != nil {
				t.Fatal(err)
			}
			problems, err := Check(repo, Options{Exclude: tt.exclude})
			if err != nil {
				t.Fatal(err)
			}
			got := problemStrings(problems)
			want := tt.want
			if want == nil {
				want = []string{}
			}
			if !slices.Equal(got, want) {
				t.Errorf("problems:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestLoadGit checks that a link must point at a file git tracks: a clone
// does not have the others.
func TestLoadGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root := writeTree(t, map[string]string{
		"README.md":         "[a](docs/tracked.md) [b](docs/untracked.md) [c](docs/deleted.md) [d](docs)\n",
		"docs/tracked.md":   "x\n",
		"docs/untracked.md": "x\n",
		"docs/deleted.md":   "x\n",
		"notes/draft.md":    "[x](missing.md)\n", // untracked: not checked
	})
	for _, args := range [][]string{
		{"init", "-q"},
		{"add", "README.md", "docs/tracked.md", "docs/deleted.md"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	if err := os.Remove(filepath.Join(root, "docs", "deleted.md")); err != nil {
		t.Fatal(err)
	}

	repo, err := LoadGit(filepath.Join(root, "docs"))
	if err != nil {
		t.Fatal(err)
	}
	problems, err := Check(repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := problemStrings(problems)
	want := []string{
		"README.md:1: docs/untracked.md: docs/untracked.md is not tracked by git: a clone will not have it",
		"README.md:1: docs/deleted.md: docs/deleted.md does not exist",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n got %q\nwant %q", got, want)
	}
}

func TestLoadGitOutsideARepository(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	t.Setenv("GIT_CEILING_DIRECTORIES", filepath.Dir(t.TempDir()))
	if _, err := LoadGit(t.TempDir()); err == nil {
		t.Error("LoadGit outside a git working tree: no error")
	}
}

func TestSlug(t *testing.T) {
	tests := []struct{ heading, want string }{
		{"Error model", "error-model"},
		{"State machine", "state-machine"},
		{"What's new?", "whats-new"},
		{"Quotas (per namespace)", "quotas-per-namespace"},
		{"a  b", "a--b"},
		{"snake_case and kebab-case", "snake_case-and-kebab-case"},
		{"100% done!", "100-done"},
		{"C++ & Go", "c--go"},
		{"Café", "café"},
		{"  trimmed  ", "trimmed"},
	}
	for _, tt := range tests {
		if got := Slug(tt.heading); got != tt.want {
			t.Errorf("Slug(%q) = %q, want %q", tt.heading, got, tt.want)
		}
	}
}
