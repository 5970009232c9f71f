// Package linkcheck finds the broken relative links of a repository's
// Markdown files: links and images whose target is not in the repository
// (or lies outside it), and #anchors that match no heading of the Markdown
// file they point into.
//
// It reads inline links and images (`[x](path)`, `![x](path#anchor)`) and
// reference definitions (`[x]: path`), but nothing inside fenced code
// blocks or code spans. Absolute URLs (https:, mailto:, any scheme) are not
// checked. Anchors follow GitHub's rules: the heading's text in lower case,
// punctuation other than '-' and '_' dropped, spaces turned into '-', and
// repeated headings numbered -1, -2, …; an HTML anchor (`<a name="x">`)
// counts too.
//
// Only the standard library is used: the small part of Markdown this needs
// is parsed here.
package linkcheck

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Repo is the tree the links must stay in.
type Repo struct {
	// Root is the repository's directory.
	Root string
	// Files are the repository's files, slash-separated and relative to
	// Root. A link target must be one of them, or a directory holding one.
	Files []string
}

// LoadGit returns the repository whose working tree holds dir: the files
// git tracks that are present in the working tree. A file git does not
// track is not a valid link target, since a clone would not have it.
func LoadGit(dir string) (Repo, error) {
	top, err := git(dir, "rev-parse", "--show-toplevel")
	if err != nil {
		return Repo{}, err
	}
	root := strings.TrimSpace(string(top))
	out, err := git(root, "ls-files", "-z")
	if err != nil {
		return Repo{}, err
	}
	repo := Repo{Root: root}
	for name := range strings.SplitSeq(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		// A tracked file deleted from the working tree is not there to link to.
		if _, err := os.Lstat(filepath.Join(root, filepath.FromSlash(name))); err == nil {
			repo.Files = append(repo.Files, name)
		}
	}
	return repo, nil
}

func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// LoadDir returns the repository made of every regular file under root,
// for a tree that is not a git working tree.
func LoadDir(root string) (Repo, error) {
	repo := Repo{Root: root}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			repo.Files = append(repo.Files, filepath.ToSlash(rel))
		}
		return nil
	})
	return repo, err
}

// Problem is one broken link.
type Problem struct {
	// File is the Markdown file, relative to the repository's root.
	File string
	// Line is the 1-based line of the link.
	Line int
	// Link is the destination as written.
	Link string
	// Reason says what is wrong with it.
	Reason string
}

// String returns "file:line: link: reason".
func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Link, p.Reason)
}

// Options adjust a check.
type Options struct {
	// Exclude lists directories (slash-separated, relative to the root)
	// whose Markdown files are not checked, e.g. generated code. Files
	// under a node_modules directory are never checked.
	Exclude []string
}

var scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)

// Check checks the links of every Markdown file (*.md) of repo and returns
// the broken ones, ordered by file and line. An error means a file could
// not be read.
func Check(repo Repo, opts Options) ([]Problem, error) {
	c := checker{repo: repo, files: make(map[string]bool), dirs: make(map[string]bool), docs: make(map[string]*document)}
	for _, name := range repo.Files {
		c.files[name] = true
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			c.dirs[dir] = true
		}
	}
	var problems []Problem
	for _, name := range repo.Files {
		if !strings.HasSuffix(name, ".md") || excluded(name, opts.Exclude) {
			continue
		}
		found, err := c.checkFile(name)
		if err != nil {
			return nil, err
		}
		problems = append(problems, found...)
	}
	slices.SortStableFunc(problems, func(a, b Problem) int {
		if a.File != b.File {
			return strings.Compare(a.File, b.File)
		}
		return a.Line - b.Line
	})
	return problems, nil
}

func excluded(name string, exclude []string) bool {
	if slices.Contains(strings.Split(name, "/"), "node_modules") {
		return true
	}
	for _, dir := range exclude {
		dir = strings.Trim(dir, "/")
		if dir != "" && strings.HasPrefix(name, dir+"/") {
			return true
		}
	}
	return false
}

type checker struct {
	repo  Repo
	files map[string]bool
	dirs  map[string]bool
	docs  map[string]*document
}

// doc parses a Markdown file of the repository, once.
func (c *checker) doc(name string) (*document, error) {
	if d, ok := c.docs[name]; ok {
		return d, nil
	}
	text, err := os.ReadFile(filepath.Join(c.repo.Root, filepath.FromSlash(name)))
	if err != nil {
		return nil, err
	}
	d := parse(string(text))
	c.docs[name] = &d
	return &d, nil
}

func (c *checker) checkFile(name string) ([]Problem, error) {
	d, err := c.doc(name)
	if err != nil {
		return nil, err
	}
	var problems []Problem
	for _, l := range d.links {
		reason, err := c.checkLink(name, l.target)
		if err != nil {
			return nil, err
		}
		if reason != "" {
			problems = append(problems, Problem{File: name, Line: l.line, Link: l.target, Reason: reason})
		}
	}
	return problems, nil
}

// checkLink returns what is wrong with a link of file from, or "".
func (c *checker) checkLink(from, target string) (string, error) {
	if scheme.MatchString(target) || strings.HasPrefix(target, "//") {
		return "", nil // an absolute URL
	}
	pathPart, anchor, hasAnchor := strings.Cut(target, "#")
	pathPart, _, _ = strings.Cut(pathPart, "?")
	decoded, err := url.PathUnescape(pathPart)
	if err != nil {
		return "malformed percent-encoding", nil
	}

	resolved := from // a bare #anchor points into the file itself
	if decoded != "" {
		if strings.HasPrefix(decoded, "/") {
			resolved = path.Clean(strings.TrimLeft(decoded, "/")) // from the repository's root, as on GitHub
		} else {
			resolved = path.Join(path.Dir(from), decoded)
		}
		switch {
		case resolved == ".." || strings.HasPrefix(resolved, "../"):
			return "points outside the repository", nil
		case resolved == "." || c.dirs[resolved]:
			return "", nil // a directory; an anchor into its rendered README is not checked
		case !c.files[resolved]:
			if c.exists(resolved) {
				return fmt.Sprintf("%s is not tracked by git: a clone will not have it", resolved), nil
			}
			return fmt.Sprintf("%s does not exist", resolved), nil
		}
	}
	if !hasAnchor || anchor == "" || !strings.HasSuffix(resolved, ".md") {
		return "", nil
	}
	decodedAnchor, err := url.PathUnescape(anchor)
	if err != nil {
		return "malformed percent-encoding in the anchor", nil
	}
	d, err := c.doc(resolved)
	if err != nil {
		return "", err
	}
	if !d.anchors[decodedAnchor] {
		return fmt.Sprintf("no heading of %s has the anchor #%s", resolved, decodedAnchor), nil
	}
	return "", nil
}

// exists tells whether a path is on disk under the root, tracked or not.
func (c *checker) exists(name string) bool {
	_, err := os.Stat(filepath.Join(c.repo.Root, filepath.FromSlash(name)))
	return err == nil
}
