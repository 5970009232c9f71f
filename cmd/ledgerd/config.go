package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
)

// config is ledgerd's configuration, from flags with environment fallbacks.
type config struct {
	DatabaseURL string
	// HeartbeatEventInterval is --heartbeat-event-interval as given (0:
	// every heartbeat).
	HeartbeatEventInterval time.Duration
	ListenAddr             string
	HTTPAddr               string // empty: no HTTP port
	InsecureDev            bool   // serve without authentication, on loopback only
	AuthRefreshInterval    time.Duration
	Principal              string // bootstrap
	DBMaxConns             int32
	NoMigrate              bool
	ShutdownTimeout        time.Duration
	SweepInterval          time.Duration // 0: no sweeper
	RequestTimeout         time.Duration
	MaxRequestTimeout      time.Duration
	LogFormat              string
	LogLevel               slog.Level
	Ledger                 ledger.Config
}

// envName is the environment variable that backs a flag.
func envName(flagName string) string {
	return "LEDGER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func parseConfig(command string, args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	limits := ledger.DefaultLimits()
	ns := ledger.DefaultNamespaceSettings()
	cfg := config{}
	var dbMaxConns int

	fs := flag.NewFlagSet("ledgerd "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL or DSN (required), e.g. postgres://ledgerd@db:5432/ledger?sslmode=verify-full")
	fs.IntVar(&dbMaxConns, "db-max-conns", 16, "maximum database connections; throughput peaks at 4-16 on a small server")
	fs.StringVar(&cfg.LogFormat, "log-format", "auto", "log format: text, json, or auto (text when stdout is a terminal, json otherwise)")
	fs.TextVar(&cfg.LogLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	if command == "bootstrap" {
		fs.StringVar(&cfg.Principal, "principal", "", "the principal (a name) of the first platform admin")
	}
	if command == "serve" {
		fs.BoolVar(&cfg.InsecureDev, "insecure-dev", false, "development only: serve without authentication (every caller may do everything); refuses non-loopback addresses")
		fs.DurationVar(&cfg.AuthRefreshInterval, "auth-refresh-interval", 5*time.Second, "how often tokens and role bindings are re-read: a revocation takes effect on every replica within it")
		fs.StringVar(&cfg.ListenAddr, "listen-addr", "127.0.0.1:7070", "gRPC listen address")
		fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:7071", "HTTP listen address: HTTP/JSON gateway (POST /ledger.v1.LedgerService/<Method>), /metrics, /healthz, /readyz; empty or \"off\" disables it")
		fs.BoolVar(&cfg.NoMigrate, "no-migrate", false, "do not apply migrations at start-up; refuse to start if any are pending")
		fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may run after SIGTERM before they are cut off")
		fs.DurationVar(&cfg.SweepInterval, "sweep-interval", time.Minute, "how often expired entries and audit events are removed (retention); 0 disables this replica's sweeper")
		fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 10*time.Second, "deadline for requests that carry none")
		fs.DurationVar(&cfg.MaxRequestTimeout, "max-request-timeout", time.Minute, "cap on any request's deadline")
		fs.IntVar(&limits.MaxKeyBytes, "max-key-bytes", limits.MaxKeyBytes, "maximum key length in bytes")
		fs.IntVar(&limits.MaxOwnerBytes, "max-owner-bytes", limits.MaxOwnerBytes, "maximum owner length in bytes")
		fs.IntVar(&limits.MaxFingerprintBytes, "max-fingerprint-bytes", limits.MaxFingerprintBytes, "maximum fingerprint length in bytes")
		fs.IntVar(&limits.MaxMetadataBytes, "max-metadata-bytes", limits.MaxMetadataBytes, "maximum metadata size (keys and values added up) in bytes")
		fs.IntVar(&limits.MaxMetadataPairs, "max-metadata-pairs", limits.MaxMetadataPairs, "maximum number of metadata pairs")
		fs.IntVar(&limits.MaxCheckpointBytes, "max-checkpoint-bytes", limits.MaxCheckpointBytes, "maximum checkpoint size in bytes")
		fs.IntVar(&limits.MaxErrorBytes, "max-error-bytes", limits.MaxErrorBytes, "maximum error message size in bytes")
		fs.DurationVar(&limits.MinLeaseTTL, "min-lease-ttl", limits.MinLeaseTTL, "shortest lease a request may ask for")
		fs.DurationVar(&limits.MaxWait, "max-wait", limits.MaxWait, "longest a Reserve may wait for the holder of a key (wait_timeout); longer waits are shortened")
		fs.DurationVar(&ns.DefaultLeaseTTL, "default-lease-ttl", ns.DefaultLeaseTTL, "lease given to requests that ask for none (new namespaces)")
		fs.DurationVar(&ns.MaxLeaseTTL, "max-lease-ttl", ns.MaxLeaseTTL, "longest lease a request may ask for (new namespaces)")
		fs.IntVar(&ns.MaxResultBytes, "max-result-bytes", ns.MaxResultBytes, "maximum result size in bytes (new namespaces)")
		fs.DurationVar(&ns.Retention, "retention", ns.Retention, "how long completed and failed entries are kept (new namespaces)")
		fs.DurationVar(&ns.EventRetention, "event-retention", ns.EventRetention, "how long audit events are kept (new namespaces)")
		fs.IntVar(&ns.MaxAttempts, "max-attempts", ns.MaxAttempts, "grants after which a retryable failure is permanent; 0 for no limit (new namespaces)")
		fs.IntVar(&limits.MaxResultBytes, "max-result-bytes-ceiling", limits.MaxResultBytes, "the largest result size any namespace may allow; sizes the gRPC message limit")
		fs.DurationVar(&cfg.HeartbeatEventInterval, "heartbeat-event-interval", time.Minute, "audit at most one heartbeat event per lease per interval; 0 records every heartbeat, a negative value none")
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ledgerd %s [flags]\n\nFlags (each also read from the environment variable shown):\n", command)
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(fs.Output(), "  --%s (%s)\n    \t%s (default %q)\n", f.Name, envName(f.Name), f.Usage, f.DefValue)
		})
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := applyEnv(fs, getenv); err != nil {
		return config{}, err
	}
	if cfg.DatabaseURL == "" {
		return config{}, errors.New("--database-url (or LEDGER_DATABASE_URL) is required")
	}
	if cfg.SweepInterval < 0 {
		return config{}, fmt.Errorf("--sweep-interval must not be negative, got %s", cfg.SweepInterval)
	}
	if dbMaxConns < 1 || dbMaxConns > 1000 {
		return config{}, fmt.Errorf("--db-max-conns must be between 1 and 1000, got %d", dbMaxConns)
	}
	if cfg.LogFormat != "auto" && cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return config{}, fmt.Errorf("--log-format must be auto, text or json, got %q", cfg.LogFormat)
	}
	if cfg.InsecureDev {
		for flagName, addr := range map[string]string{"--listen-addr": cfg.ListenAddr, "--http-addr": cfg.HTTPAddr} {
			if addr != "" && addr != "off" && !loopback(addr) {
				return config{}, fmt.Errorf("--insecure-dev serves without authentication, so %s must be a loopback address (127.0.0.1, ::1, localhost), got %q", flagName, addr)
			}
		}
	}
	if cfg.HTTPAddr == "off" {
		// An empty environment variable counts as unset, so LEDGER_HTTP_ADDR
		// cannot disable the port by being empty: "off" does.
		cfg.HTTPAddr = ""
	}
	cfg.DBMaxConns = int32(dbMaxConns)
	heartbeatEvents := cfg.HeartbeatEventInterval
	if heartbeatEvents == 0 {
		heartbeatEvents = time.Nanosecond // every heartbeat (zero is the ledger's default, 1m)
	}
	cfg.Ledger = ledger.Config{Limits: limits, NamespaceDefaults: ns, HeartbeatEventInterval: heartbeatEvents}
	if err := cfg.Ledger.Validate(); err != nil {
		return config{}, err
	}
	return cfg, nil
}

// applyEnv sets every flag that was not given on the command line from its
// environment variable, if that is set.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		value := getenv(envName(f.Name))
		if err != nil || given[f.Name] || value == "" {
			return
		}
		if setErr := fs.Set(f.Name, value); setErr != nil {
			err = fmt.Errorf("%s: %w", envName(f.Name), setErr)
		}
	})
	return err
}

// logger logs to w as --log-format says; "auto" means text for a person
// at a terminal, JSON for a log collector otherwise.
func (c config) logger(w io.Writer) *slog.Logger {
	options := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" || (c.LogFormat == "auto" && !isTerminal(w)) {
		return slog.New(slog.NewJSONHandler(w, options))
	}
	return slog.New(slog.NewTextHandler(w, options))
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// maxMessageBytes sizes gRPC's receive limit from the largest request the
// limits allow (a Complete with the largest result any namespace may
// allow), with room for the other fields, and never below gRPC's own 4 MiB
// default.
func (c config) maxMessageBytes() int {
	return max(4<<20, c.Ledger.Limits.MaxResultBytes+1<<20)
}

// loopback reports whether a listen address is on the loopback interface
// only (an empty host listens on every interface).
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
