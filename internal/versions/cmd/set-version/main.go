// Command set-version writes one release version into every file that
// states it (see package versions): `make set-version V=x.y.z`.
package main

import (
	"fmt"
	"os"

	"github.com/ledgerd/ledgerd/internal/versions"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: set-version MAJOR.MINOR.PATCH (run from the repository's root; make set-version V=x.y.z does)")
		os.Exit(2)
	}
	if err := versions.Set(".", os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "set-version:", err)
		os.Exit(1)
	}
	for _, p := range versions.Places {
		fmt.Printf("set-version: %s: %s\n", p.Name, os.Args[1])
	}
}
