package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
)

// command is one ledgerctl command (or a group of them, like namespaces).
type command struct {
	// name is how it is called, e.g. "list" or "namespaces set".
	name string
	// args names its positional arguments for the help, e.g. "NS KEY".
	args string
	// minArgs and maxArgs bound the number of positional arguments;
	// maxArgs -1 means no bound.
	minArgs, maxArgs int
	// summary is the first line of its help; details follow it.
	summary, details string
	// subcommands, for a group, lists them in its help; a group runs none.
	subcommands string
	// jsonByDefault makes -o json the default (events: an export).
	jsonByDefault bool
	// flags registers the command's own flags.
	flags func(fs *flag.FlagSet)
	// run does the work with the positional arguments.
	run func(ctx context.Context, c *cli, args []string) error
}

func (cmd *command) defaultOutput() string {
	if cmd.jsonByDefault {
		return formatJSON
	}
	return formatTable
}

// commands returns every command, in the order of the help.
func commands() []*command {
	return []*command{
		getCommand(), historyCommand(), listCommand(), eventsCommand(),
		releaseCommand(), resetCommand(), purgeCommand(),
		namespacesCommand(), namespacesListCommand(), namespacesShowCommand(),
		namespacesCreateCommand(), namespacesSetCommand(),
		whoamiCommand(), tokensCommand(), tokensListCommand(), tokensCreateCommand(), tokensRevokeCommand(),
		rolesCommand(), rolesListCommand(), rolesGrantCommand(), rolesRevokeCommand(),
	}
}

// findCommand finds the command that args start with: the longest name
// that matches ("namespaces set" before "namespaces"). It returns the
// remaining arguments.
func findCommand(args []string) (*command, []string, error) {
	var found *command
	words := 0
	for _, cmd := range commands() {
		name := strings.Fields(cmd.name)
		if len(name) <= len(args) && len(name) > words && strings.Join(args[:len(name)], " ") == cmd.name {
			found, words = cmd, len(name)
		}
	}
	if found == nil {
		return nil, nil, fmt.Errorf("unknown command %q", args[0])
	}
	// A group's next word must be one of its subcommands, not a typo.
	if found.subcommands != "" && len(args) > words && !strings.HasPrefix(args[words], "-") {
		return nil, nil, fmt.Errorf("unknown command %q", strings.Join(args[:words+1], " "))
	}
	return found, args[words:], nil
}

// help is the command's --help.
func (cmd *command) help() string {
	var b strings.Builder
	if cmd.subcommands != "" {
		fmt.Fprintf(&b, "Usage: ledgerctl %s SUBCOMMAND ARGS [flags]\n\n%s\n", cmd.name, cmd.summary)
		if cmd.details != "" {
			fmt.Fprintf(&b, "\n%s\n", cmd.details)
		}
		fmt.Fprintf(&b, "\nSubcommands:\n%s\nRun 'ledgerctl %s SUBCOMMAND --help' for a subcommand's flags.\n", cmd.subcommands, cmd.name)
		return b.String()
	}
	fmt.Fprintf(&b, "Usage: ledgerctl %s", cmd.name)
	if cmd.args != "" {
		fmt.Fprintf(&b, " %s", cmd.args)
	}
	fmt.Fprintf(&b, " [flags]\n\n%s\n", cmd.summary)
	if cmd.details != "" {
		fmt.Fprintf(&b, "\n%s\n", cmd.details)
	}
	if cmd.flags != nil {
		fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
		cmd.flags(fs)
		fmt.Fprintf(&b, "\nFlags:\n%s", flagHelp(fs))
	}
	fmt.Fprintf(&b, "\nGlobal flags: --addr, --insecure, --ca-file, --cert-file, --key-file, --token-file,\n--token, --timeout, -o table|json (default %s).\n", cmd.defaultOutput())
	b.WriteString("Exit codes: 0 ok, 1 internal, 2 usage, 3 not found, 4 refused by the ledger,\n" +
		"5 unavailable (retry later), 6 invalid argument, 7 not allowed. See 'ledgerctl --help'.\n")
	return b.String()
}

// flagHelp lists fs's flags, with -- for the long ones.
func flagHelp(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		dashes := "--"
		if len(f.Name) == 1 {
			dashes = "-"
		}
		valueName, text := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  %s%s", dashes, f.Name)
		if valueName != "" {
			fmt.Fprintf(&b, " %s", valueName)
		}
		b.WriteString("\n")
		for line := range strings.SplitSeq(text, "\n") {
			fmt.Fprintf(&b, "      %s\n", line)
		}
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "auto" && f.DefValue != "[]" {
			fmt.Fprintf(&b, "      (default %s)\n", f.DefValue)
		}
	})
	return b.String()
}

// exitCode is the exit code for a command's error (see the package
// documentation).
func exitCode(err error) int {
	var usage *usageError
	if errors.As(err, &usage) {
		return exitUsage
	}
	var refused *refusal
	if errors.As(err, &refused) {
		return exitRefused
	}
	var e *ledgerclient.Error
	if errors.As(err, &e) {
		return codeExit(e.Code())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return exitUnavailable
	}
	return exitInternal
}

// codeExit is the exit code for a gRPC status code.
func codeExit(code codes.Code) int {
	switch code {
	case codes.NotFound:
		return exitNotFound
	case codes.FailedPrecondition, codes.Aborted, codes.AlreadyExists:
		return exitRefused
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return exitUnavailable
	case codes.InvalidArgument, codes.OutOfRange:
		return exitInvalid
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitNotAllowed
	default:
		return exitInternal
	}
}

// refusal is a refusal that ledgerctl decides from what the ledger said,
// e.g. releasing a key that is not leased. It exits with exitRefused.
type refusal struct {
	reason, message string
}

func (r *refusal) Error() string { return r.reason + ": " + r.message }

// describe says what went wrong: the ledgerd reason and the server's
// message, without the client's wrapping.
func describe(err error, timeout time.Duration) string {
	var e *ledgerclient.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Sprintf("DEADLINE_EXCEEDED: no answer within --timeout %s", timeout)
		}
		return err.Error()
	}
	label := e.Reason
	if label == "" {
		label = codeName(e.Code())
	}
	text := label + ": " + e.GRPCStatus().Message()
	switch {
	case errors.Is(err, context.DeadlineExceeded) && e.Code() != codes.DeadlineExceeded:
		// The client retried until --timeout ran out; say what it was retrying.
		return fmt.Sprintf("DEADLINE_EXCEEDED: no answer within --timeout %s; last error: %s", timeout, text)
	case e.Code() == codes.Unimplemented:
		return text + " (this ledgerd does not serve the RPC: is it older than ledgerctl?)"
	}
	return text
}

// codeName spells a gRPC code as the API does, e.g. FAILED_PRECONDITION.
func codeName(code codes.Code) string {
	var b strings.Builder
	for i, r := range code.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
