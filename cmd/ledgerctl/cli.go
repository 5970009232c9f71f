package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	"github.com/ledgerd/ledgerd/internal/version"
)

// The exit codes (see the package documentation).
const (
	exitOK          = 0
	exitInternal    = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitRefused     = 4
	exitUnavailable = 5
	exitInvalid     = 6
	exitNotAllowed  = 7
)

// The output formats of -o.
const (
	formatTable = "table"
	formatJSON  = "json"
)

const (
	// envAddr backs --addr.
	envAddr = "LEDGERCTL_ADDR"
	// envToken and envTokenFile back --token and --token-file.
	envToken     = "LEDGERCTL_TOKEN"
	envTokenFile = "LEDGERCTL_TOKEN_FILE"
	// envCAFile, envCertFile and envKeyFile back --ca-file, --cert-file and
	// --key-file.
	envCAFile   = "LEDGERCTL_CA_FILE"
	envCertFile = "LEDGERCTL_CERT_FILE"
	envKeyFile  = "LEDGERCTL_KEY_FILE"
	// defaultAddr is where `make run` serves ledgerd.
	defaultAddr = "127.0.0.1:7070"
	// defaultTimeout bounds each RPC.
	defaultTimeout = 10 * time.Second
)

const usage = `ledgerctl is the ops CLI of ledgerd, the idempotency ledger. It shows keys,
their audit history and the namespaces, and releases, resets and purges keys.
It talks to ledgerd over gRPC, never to the database.

Usage:
  ledgerctl [global flags] COMMAND ARGS [flags]

Keys:
  get NS KEY            show a key's entry; --history adds its audit events
  history NS KEY        list a key's audit events, oldest first
  list NS               list a namespace's entries: --state, --owner, --prefix,
                        --updated-after, --updated-before, --stuck (expired leases)
  events NS             export a namespace's audit events (JSON lines): --since,
                        --until, --kind

Admin actions (audited with the caller and --reason):
  release NS KEY        end a key's lease, whoever holds it
  reset NS KEY          forget a key's result or failure so that its work runs again
  purge NS              remove the entries whose retention has elapsed, now

Namespaces:
  namespaces list       list the namespaces and their settings
  namespaces show NAME  show one namespace's settings
  namespaces create NAME --reason R [settings]
  namespaces set NAME --reason R [settings]

Access (whoami: anyone; tokens and roles: platform admins, audited with --reason):
  whoami                show who your token authenticates as, and your role bindings
  tokens list           list the API tokens (never their secrets)
  tokens create --principal P --reason R [--description D] [--ttl 90d]
                        issue an API token; it is printed this once only
  tokens revoke ID --reason R
                        revoke a token: every ledgerd refuses it within seconds
  roles list            list the role bindings
  roles grant PRINCIPAL ROLE PATTERN --reason R
                        give PRINCIPAL a role (worker, reader, admin, platform-admin)
                        in the namespaces PATTERN matches (a name, "prefix-*" or "*")
  roles revoke PRINCIPAL ROLE PATTERN --reason R

Other:
  help [COMMAND]        show this help, or a command's
  version               print ledgerctl's version, commit, build date and Go release
                        (also --version)

Global flags (accepted before or after the command):
%s
Authentication:
  A ledgerd that authenticates wants an API token (ldg_...) with every call. Give
  it with --token-file PATH or LEDGERCTL_TOKEN_FILE (a file that holds it), or
  LEDGERCTL_TOKEN; --token works too, but other users of the machine see it in
  ps. A flag wins over the environment. The token travels over TLS, or in
  plaintext to a loopback address or with --insecure. A ledgerd that takes
  client certificates authenticates --cert-file and --key-file as the
  principal cert:<the certificate's common name>; a token wins over it.
  'ledgerctl whoami' shows who you authenticate as.

Output:
  Tables by default (events: JSON lines). Times are RFC 3339 in UTC. Byte
  fields (result, fingerprint, checkpoint) are shown as text when they are
  printable UTF-8, otherwise as "base64:" and their standard base64.
  -o json prints protojson with the proto field names (fencing_token), one
  object per line for listings. Every field is present (unset messages as
  null); enums are names (STATE_LEASED), int64 values strings, bytes base64.

Exit codes:
  0  success
  1  internal or unexpected error (also UNIMPLEMENTED: a ledgerd older than ledgerctl)
  2  usage error: unknown command or flag, missing or extra arguments
  3  not found: the key or namespace does not exist
  4  refused by the ledger: FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS
     (e.g. LEASE_LOST, NOT_LEASED, a namespace that already exists)
  5  unavailable, out of time or rate-limited: retry later
  6  invalid argument, said by the server (the message names the field)
  7  not allowed: UNAUTHENTICATED or PERMISSION_DENIED
  Errors are printed to stderr as "ledgerctl COMMAND: REASON: message".

Run 'ledgerctl COMMAND --help' for a command's arguments and flags.
`

// globals are the flags every command accepts.
type globals struct {
	addr      string
	insecure  optionalBool
	timeout   time.Duration
	output    string
	token     string
	tokenFile string
	caFile    string
	certFile  string
	keyFile   string
}

// register adds the global flags to fs.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "ledgerd's gRPC address: `HOST:PORT` or a gRPC target (env "+envAddr+")")
	fs.Var(&g.insecure, "insecure", "connect without TLS (plaintext). Defaults to true for a loopback address\n"+
		"(localhost, 127.0.0.0/8, ::1, unix sockets) and false otherwise, where ledgerctl\n"+
		"uses TLS with the system's root CAs. With --insecure the API token travels in\n"+
		"plaintext: use it only on a network you trust")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "`DURATION` each RPC may take, retries while ledgerd is unavailable included;\n"+
		"a listing makes one RPC per page of up to 1000 rows")
	fs.StringVar(&g.output, "o", g.output, "output `FORMAT`: table or json (default table; json lines for events)")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "read the API token from the file at `PATH` (env "+envTokenFile+")")
	fs.StringVar(&g.token, "token", g.token, "API `TOKEN` (ldg_...) to send with every call (env "+envToken+"). Other users\n"+
		"see it in ps: prefer --token-file or the environment")
	fs.StringVar(&g.caFile, "ca-file", g.caFile, "trust the CAs in the PEM file at `PATH` for ledgerd's certificate instead of\n"+
		"the system's (env "+envCAFile+"); implies TLS")
	fs.StringVar(&g.certFile, "cert-file", g.certFile, "client certificate (PEM) at `PATH` to authenticate with, with --key-file\n"+
		"(env "+envCertFile+"); implies TLS")
	fs.StringVar(&g.keyFile, "key-file", g.keyFile, "private key (PEM) of --cert-file at `PATH` (env "+envKeyFile+")")
}

// optionalBool is a boolean flag that knows whether it was given.
type optionalBool struct {
	value, set bool
}

func (b *optionalBool) String() string {
	if b == nil || !b.set {
		return "auto"
	}
	return strconv.FormatBool(b.value)
}

func (b *optionalBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	b.value, b.set = v, true
	return nil
}

func (b *optionalBool) IsBoolFlag() bool { return true }

// cli is one run of ledgerctl: its output, its global flags and, once a
// command has parsed its arguments, its connection.
type cli struct {
	stdout, stderr io.Writer
	globals
	getenv func(string) string
	// tokenSource says where the token came from ("" without one), for
	// messages; the token itself is never printed.
	tokenSource string
	client      *ledgerclient.Client
}

// run is main without the process: arguments, environment and output are
// passed in so that tests can drive it. It returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, globals: globals{addr: defaultAddr, timeout: defaultTimeout}, getenv: getenv}
	if addr := getenv(envAddr); addr != "" {
		c.addr = addr
	}
	defer func() {
		if c.client != nil {
			_ = c.client.Close()
		}
	}()

	top := flag.NewFlagSet("ledgerctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	c.register(top)
	showVersion := top.Bool("version", false, "print ledgerctl's version and exit")
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, topUsage())
			return exitOK
		}
		fmt.Fprintf(stderr, "ledgerctl: %v\nRun 'ledgerctl --help' for usage.\n", err)
		return exitUsage
	}
	args = top.Args()
	if *showVersion {
		return c.printVersion()
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage())
		return exitUsage
	}
	switch args[0] {
	case "help":
		return c.help(args[1:])
	case "version":
		return c.printVersion()
	}
	cmd, rest, err := findCommand(args)
	if err != nil {
		fmt.Fprintf(stderr, "ledgerctl: %v\nRun 'ledgerctl --help' for usage.\n", err)
		return exitUsage
	}
	return c.runCommand(ctx, cmd, rest)
}

// printVersion answers `ledgerctl version` and `ledgerctl --version`.
func (c *cli) printVersion() int {
	if err := version.Write(c.stdout, "ledgerctl", version.Get()); err != nil {
		return exitInternal
	}
	return exitOK
}

// usage is the top-level help.
func topUsage() string {
	fs := flag.NewFlagSet("ledgerctl", flag.ContinueOnError)
	(&globals{addr: defaultAddr, timeout: defaultTimeout}).register(fs)
	return fmt.Sprintf(usage, flagHelp(fs))
}

// help answers `ledgerctl help [COMMAND]`.
func (c *cli) help(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stdout, topUsage())
		return exitOK
	}
	cmd, rest, err := findCommand(args)
	if err != nil || len(rest) > 0 {
		fmt.Fprintf(c.stderr, "ledgerctl help: no command %q\nRun 'ledgerctl --help' for the commands.\n", strings.Join(args, " "))
		return exitUsage
	}
	fmt.Fprint(c.stdout, cmd.help())
	return exitOK
}

// runCommand parses a command's flags and arguments, connects and runs it.
func (c *cli) runCommand(ctx context.Context, cmd *command, args []string) int {
	fs := flag.NewFlagSet("ledgerctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	c.register(fs)
	positional, err := parseInterspersed(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(c.stdout, cmd.help())
		return exitOK
	case err != nil:
		return c.usageFailure(cmd, err.Error())
	case cmd.subcommands != "":
		// A group without a subcommand, e.g. `ledgerctl namespaces`.
		return c.usageFailure(cmd, "missing subcommand")
	case len(positional) < cmd.minArgs || (cmd.maxArgs >= 0 && len(positional) > cmd.maxArgs):
		return c.usageFailure(cmd, argCountProblem(cmd, positional))
	}
	if c.output != "" && c.output != formatTable && c.output != formatJSON {
		return c.usageFailure(cmd, fmt.Sprintf("-o %q: want table or json", c.output))
	}
	if c.output == "" {
		c.output = cmd.defaultOutput()
	}
	if c.timeout <= 0 {
		return c.usageFailure(cmd, "--timeout must be positive")
	}
	token, err := c.readToken()
	if err != nil {
		return c.usageFailure(cmd, err.Error())
	}
	if err := c.connect(token); err != nil {
		return c.usageFailure(cmd, err.Error())
	}
	if err := cmd.run(ctx, c, positional); err != nil {
		var usage *usageError
		if errors.As(err, &usage) {
			return c.usageFailure(cmd, usage.problem)
		}
		fmt.Fprintf(c.stderr, "ledgerctl %s: %s%s\n", cmd.name, describe(err, c.timeout), c.accessHint(err))
		return exitCode(err)
	}
	return exitOK
}

// accessHint says what to do about a refusal for want of credentials.
func (c *cli) accessHint(err error) string {
	switch {
	case errors.Is(err, ledgerclient.ErrUnauthenticated) && c.tokenSource == "" && c.certFile != "":
		return " (the client certificate " + c.certFile + ")"
	case errors.Is(err, ledgerclient.ErrUnauthenticated) && c.tokenSource == "":
		return " (no API token given: use --token-file PATH, " + envTokenFile + " or " + envToken + ")"
	case errors.Is(err, ledgerclient.ErrUnauthenticated):
		return " (the token from " + c.tokenSource + ")"
	case errors.Is(err, ledgerclient.ErrPermissionDenied):
		return " ('ledgerctl whoami' shows your role bindings)"
	}
	return ""
}

// readToken returns the API token to send, "" for none: from --token or
// --token-file, else from LEDGERCTL_TOKEN or LEDGERCTL_TOKEN_FILE. Giving
// both of a pair is a usage error. Errors never show the token.
func (c *cli) readToken() (string, error) {
	value, file := c.token, c.tokenFile
	valueSource, fileSource := "--token", "--token-file"
	if value != "" && file != "" {
		return "", errors.New("give --token or --token-file, not both")
	}
	if value == "" && file == "" {
		value, file = c.getenv(envToken), c.getenv(envTokenFile)
		valueSource, fileSource = envToken, envTokenFile
		if value != "" && file != "" {
			return "", fmt.Errorf("%s and %s are both set: unset one", envToken, envTokenFile)
		}
	}
	source := valueSource
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fileSource, err)
		}
		value, source = string(raw), fileSource+" "+file
		if strings.TrimSpace(value) == "" {
			return "", fmt.Errorf("%s: the file is empty", source)
		}
	}
	if value == "" {
		return "", nil
	}
	token := strings.TrimSpace(value)
	if !strings.HasPrefix(token, "ldg_") || strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return "", fmt.Errorf("%s: not a ledgerd API token (one word that starts with ldg_)", source)
	}
	c.tokenSource = source
	return token, nil
}

func (c *cli) usageFailure(cmd *command, problem string) int {
	fmt.Fprintf(c.stderr, "ledgerctl %s: %s\nRun 'ledgerctl %s --help' for usage.\n", cmd.name, problem, cmd.name)
	return exitUsage
}

func argCountProblem(cmd *command, positional []string) string {
	if len(positional) < cmd.minArgs {
		return fmt.Sprintf("missing arguments: want %s", cmd.args)
	}
	if cmd.args == "" {
		return fmt.Sprintf("unexpected arguments %q: it takes none", positional)
	}
	return fmt.Sprintf("unexpected arguments %q: want %s (put -- before an argument that starts with '-')",
		positional[cmd.maxArgs:], cmd.args)
}

// usageError is a problem with the command line found by a command itself,
// e.g. a filter that does not parse; it exits with exitUsage.
type usageError struct{ problem string }

func (e *usageError) Error() string { return e.problem }

func usageErrorf(format string, args ...any) error {
	return &usageError{problem: fmt.Sprintf(format, args...)}
}

// parseInterspersed parses fs's flags wherever they are among args, as in
// `ledgerctl get billing k1 --history`, and returns the other arguments.
// Everything after "--" is an argument, so that a key may start with '-'.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		consumed := len(args) - fs.NArg()
		if consumed > 0 && args[consumed-1] == "--" {
			return append(positional, fs.Args()...), nil
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// connect makes the client (lazily: the first RPC connects), which sends
// token, if any, with every call.
func (c *cli) connect(token string) error {
	creds := ledgerclient.WithInsecure()
	tlsConfig, err := c.tlsConfig()
	if err != nil {
		return err
	}
	insecure := c.insecure.value
	if !c.insecure.set {
		// A CA or client certificate means TLS, even to loopback.
		insecure = isLoopback(c.addr) && c.caFile == "" && c.certFile == ""
	}
	switch {
	case insecure && (c.caFile != "" || c.certFile != ""):
		return errors.New("--insecure connects without TLS: drop it, or --ca-file and --cert-file")
	case !insecure:
		creds = ledgerclient.WithTransportCredentials(credentials.NewTLS(tlsConfig))
	}
	options := []ledgerclient.Option{creds}
	if token != "" {
		options = append(options, ledgerclient.WithToken(token))
	}
	client, err := ledgerclient.New(c.addr, options...)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", c.addr, err)
	}
	c.client = client
	return nil
}

// tlsConfig is the TLS configuration of --ca-file, --cert-file and
// --key-file, or else of their environment variables.
func (c *cli) tlsConfig() (*tls.Config, error) {
	for _, file := range []struct {
		value *string
		env   string
	}{{&c.caFile, envCAFile}, {&c.certFile, envCertFile}, {&c.keyFile, envKeyFile}} {
		if *file.value == "" {
			*file.value = c.getenv(file.env)
		}
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", c.caFile)
		}
	}
	if (c.certFile == "") != (c.keyFile == "") {
		return nil, errors.New("--cert-file and --key-file go together: give both or neither")
	}
	if c.certFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file and --key-file: %w", err)
		}
		config.Certificates = []tls.Certificate{cert}
	}
	return config, nil
}

// isLoopback reports whether the gRPC target addr stays on this machine:
// localhost, a loopback IP, or a unix socket.
func isLoopback(addr string) bool {
	if strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "unix-abstract:") {
		return true
	}
	// Drop a resolver scheme and authority, e.g. dns:///host:port or
	// passthrough:///host:port.
	if i := strings.Index(addr, ":///"); i >= 0 {
		addr = addr[i+len(":///"):]
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// rpcContext bounds one RPC (with its retries) by --timeout.
func (c *cli) rpcContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}
