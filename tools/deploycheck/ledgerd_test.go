package deploycheck

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the ledgerd repository, seen from this package's directory.
const repoRoot = "../.."

// flagSet is what one `ledgerd <command> --help` lists.
type flagSet struct {
	command string
	flags   map[string]bool
}

// known reports whether name (without dashes) is one of the command's flags.
func (f flagSet) known(name string) bool { return f.flags[name] }

// knownEnv reports whether a LEDGER_* variable backs one of the flags.
func (f flagSet) knownEnv(variable string) bool {
	name, ok := strings.CutPrefix(variable, "LEDGER_")
	return ok && f.flags[strings.ReplaceAll(strings.ToLower(name), "_", "-")]
}

// ledgerd is the binary built from this repository by TestMain.
var ledgerd string

// TestMain builds ledgerd once for every test, and removes it after.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deploycheck")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ledgerd = filepath.Join(dir, "ledgerd")
	cmd := exec.Command("go", "build", "-o", ledgerd, "./cmd/ledgerd")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/ledgerd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ledgerdFlags returns the flags that `ledgerd <command> --help` lists.
func ledgerdFlags(t *testing.T, command string) flagSet {
	t.Helper()
	// --help exits non-zero (flag.ErrHelp); the listing is what counts.
	out, _ := exec.Command(ledgerd, command, "--help").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("ledgerd %s --help listed %d flags, want its whole list:\n%s", command, len(flags), out)
	}
	return flagSet{command: command, flags: flags}
}

// flagName returns the name of a command-line flag ("--name" or
// "--name=value"), and false for an argument that is not a flag.
func flagName(arg string) (string, bool) {
	name, ok := strings.CutPrefix(arg, "--")
	if !ok {
		name, ok = strings.CutPrefix(arg, "-")
	}
	if !ok {
		return "", false
	}
	name, _, _ = strings.Cut(name, "=")
	return name, true
}

// checkArgs checks a command line (without the program): the command first,
// then flags the command knows, each value either after "=" or as the next
// argument.
func checkArgs(t *testing.T, where string, args []string, flags flagSet) {
	t.Helper()
	if len(args) == 0 || args[0] != flags.command {
		t.Errorf("%s: args %q: want %q first", where, args, flags.command)
		return
	}
	for i := 1; i < len(args); i++ {
		name, ok := flagName(args[i])
		if !ok {
			t.Errorf("%s: argument %q is not a flag (ledgerd %s takes no arguments)", where, args[i], flags.command)
			continue
		}
		if !flags.known(name) {
			t.Errorf("%s: --%s is not a flag of `ledgerd %s --help`", where, name, flags.command)
		}
		if !strings.Contains(args[i], "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++ // the flag's value
		}
	}
}
