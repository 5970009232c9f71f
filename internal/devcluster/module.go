package devcluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// modulePath identifies ledgerd's source tree, which holds scripts/pg.sh and
// ./cmd/ledgerd.
const modulePath = "github.com/ledgerd/ledgerd"

// ModuleRoot returns the directory of ledgerd's go.mod: the first one found
// from the working directory upwards, or else the source tree this package
// was compiled from, if it is still there (a test binary, `go run`). It
// fails when neither is ledgerd's: a binary run away from the checkout.
func ModuleRoot() (string, error) {
	var tried []string
	if dir, err := os.Getwd(); err == nil {
		for {
			if isModuleRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
		tried = append(tried, "the working directory and its parents")
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		// file is <root>/internal/devcluster/module.go.
		dir := filepath.Dir(filepath.Dir(filepath.Dir(file)))
		if isModuleRoot(dir) {
			return dir, nil
		}
		tried = append(tried, dir)
	}
	return "", fmt.Errorf("find ledgerd's source tree: no go.mod of %s in %s", modulePath, strings.Join(tried, " or "))
}

// isModuleRoot reports whether dir holds the go.mod of modulePath.
func isModuleRoot(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	lines := bufio.NewScanner(bytes.NewReader(data))
	for lines.Scan() {
		if name, ok := strings.CutPrefix(strings.TrimSpace(lines.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(name), `"`) == modulePath
		}
	}
	return false
}

// BuildLedgerd builds ./cmd/ledgerd of the source tree in root (see
// ModuleRoot) into binary. The first build on a machine downloads and
// compiles the dependencies, which takes minutes; later ones come from Go's
// build cache. When the build fails, the error holds go build's output.
func BuildLedgerd(ctx context.Context, root, binary string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/ledgerd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build ledgerd (go build ./cmd/ledgerd in %s): %w\n%s", root, err, bytes.TrimSpace(out))
	}
	return nil
}
