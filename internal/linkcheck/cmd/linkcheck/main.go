// Command linkcheck fails when a Markdown file tracked by git has a broken
// relative link: a target that is not in the repository (or lies outside
// it), or an #anchor that matches no heading of the Markdown file it points
// into. It prints one "file:line: link: reason" line per broken link.
//
//	go run ./internal/linkcheck/cmd/linkcheck [-exclude dir,dir]
//
// It checks the repository whose working tree holds the current directory.
// The exit status is 0 when every link resolves, 1 when some do not, and 2
// when the check could not run.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ledgerd/ledgerd/internal/linkcheck"
)

// generated are the directories of generated code, whose Markdown (if any)
// is not ours to fix.
const generated = "gen,clients/python/gen,clients/typescript/src/gen"

func main() {
	exclude := flag.String("exclude", generated, "comma-separated directories whose Markdown files are not checked (node_modules never is)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: linkcheck [-exclude dir,dir]\n\nChecks the relative links of the Markdown files git tracks.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	repo, err := linkcheck.LoadGit(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "linkcheck:", err)
		os.Exit(2)
	}
	var dirs []string
	if *exclude != "" {
		dirs = strings.Split(*exclude, ",")
	}
	problems, err := linkcheck.Check(repo, linkcheck.Options{Exclude: dirs})
	if err != nil {
		fmt.Fprintln(os.Stderr, "linkcheck:", err)
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "linkcheck: %d broken link(s)\n", len(problems))
		os.Exit(1)
	}
}
