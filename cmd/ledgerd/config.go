package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// config is ledgerd's configuration, from its defaults, a file, the
// environment and the command line (see parseLayers).
type config struct {
	DatabaseURL string
	// ReadDatabaseURL is a hot standby's URL for the reads that may be
	// stale (ListEntries, GetHistory, ListEvents); empty: the primary
	// serves them.
	ReadDatabaseURL string
	// ReadDBMaxConns is the read pool's size.
	ReadDBMaxConns int32
	// HeartbeatEventInterval is --heartbeat-event-interval as given (0:
	// every heartbeat).
	HeartbeatEventInterval time.Duration
	ListenAddr             string
	HTTPAddr               string // empty: no HTTP port
	// Console serves the ops console under /ui/ on the HTTP port.
	Console   bool
	PprofAddr string // empty: no profiling port; loopback only
	// MetricsListenAddr serves /metrics on an internal listener of its
	// own instead of the HTTP port; empty: /metrics on the HTTP port.
	MetricsListenAddr string
	// MaxConnections bounds the connections each port (gRPC, HTTP) holds
	// at once; 0: no bound.
	MaxConnections      int
	InsecureDev         bool // serve without authentication, on loopback only
	AuthRefreshInterval time.Duration
	Principal           string // bootstrap
	Reason              string // restore-fence
	DBMaxConns          int32
	NoMigrate           bool
	ShutdownTimeout     time.Duration
	// LameDuckDelay is how long, on SIGTERM, health says NOT_SERVING while
	// calls are still served, before the drain (0: none).
	LameDuckDelay time.Duration
	// HealthCheckInterval and HealthCheckTimeout: how often the database
	// is pinged to set the health status, and how long a ping may take.
	HealthCheckInterval time.Duration
	HealthCheckTimeout  time.Duration
	SweepInterval       time.Duration // 0: no sweeper
	RequestTimeout      time.Duration
	MaxRequestTimeout   time.Duration
	LogFormat           string
	LogLevel            slog.Level
	Ledger              ledger.Config
	// DBStatementTimeout and DBIdleInTransactionTimeout are the sessions'
	// statement_timeout and idle_in_transaction_session_timeout: negative
	// leaves the database's own setting, 0 is none.
	DBStatementTimeout         time.Duration
	DBIdleInTransactionTimeout time.Duration
	// GRPC are the gRPC server's limits (message sizes, streams,
	// keepalive, connection lifetimes).
	GRPC server.Limits
	// RateLimits bound the requests of each principal and namespace, per
	// replica.
	RateLimits server.RateLimits
	// MaxWaitingReservesPerPrincipal bounds one principal's waiting
	// Reserves on a replica; 0 is no cap.
	MaxWaitingReservesPerPrincipal int
	// TLS serves both ports over TLS; nil without --tls-cert-file.
	TLS *server.TLSConfig
	// FailedAuthLimit bounds the failed authentications of each source
	// address, per replica (a negative rate: none).
	FailedAuthLimit server.Rate
	// HTTP are the HTTP port's limits and its trusted proxies.
	HTTP httpSettings
	// Layers say where each setting came from (see parseLayers).
	Layers *layers
	// Output is `ledgerd config -o`: text or json.
	Output string
	// reread parses the configuration again from the same command line, and
	// the file and the environment as they are then: a reload.
	reread func() (config, error)
}

// httpSettings are the --http-* flags.
type httpSettings struct {
	ReadHeaderTimeout time.Duration
	BodyReadTimeout   time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	TrustedProxies    []netip.Prefix
}

// envName is the environment variable that backs a flag.
func envName(flagName string) string {
	return "LEDGER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagValues are where the flags land, before check turns them into a
// config.
type flagValues struct {
	cfg                        config
	limits                     ledger.Limits
	ns                         ledger.NamespaceSettings
	coalesce                   ledger.CoalesceConfig
	autoCreateNamespaces       bool
	maxNamespacesPerPattern    int
	adminEventRetention        time.Duration
	maxConcurrentBatches       int
	dbMaxConns, readDBMaxConns int
	grpcValues                 grpcFlagValues
	tlsValues                  tlsFlagValues
	maxTokenTTL                time.Duration
}

func newFlagValues() *flagValues {
	return &flagValues{limits: ledger.DefaultLimits(), ns: ledger.DefaultNamespaceSettings(), adminEventRetention: 365 * 24 * time.Hour}
}

// serves reports whether command takes `ledgerd serve`'s flags: serve, and
// config, which prints what serve would run with.
func serves(command string) bool { return command == "serve" || command == "config" }

// parseConfig reads command's configuration from its layers, each over
// the one before: the flags' defaults, the file that --config or
// LEDGER_CONFIG names, the LEDGER_ variables, and the command line (see
// parseLayers); then checks it. Errors name the setting, its value and
// the rule, and where a value that breaks a rule came from.
func parseConfig(command string, args []string, env environment, stderr io.Writer) (config, error) {
	v := newFlagValues()
	fs := flag.NewFlagSet("ledgerd "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defineFlags(fs, command, v)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ledgerd %s [flags]\n\nFlags (each also read from the environment variable shown, and from the key\nof its name in the --config file; flags win over variables, variables over the file):\n", command)
		fs.VisitAll(func(f *flag.Flag) {
			variable := envName(f.Name)
			if f.Name == outputFlag {
				variable = "no variable"
			}
			fmt.Fprintf(fs.Output(), "  --%s (%s)\n    \t%s (default %q)\n", f.Name, variable, f.Usage, f.DefValue)
		})
	}
	layers, err := parseLayers(fs, args, env)
	if err != nil {
		return config{}, err
	}
	cfg, err := v.check(command, fs)
	if err != nil {
		return config{}, layers.explain(err)
	}
	cfg.Layers = layers
	// A reload reads the same layers again: the same command line, and the
	// file and the environment as they are then.
	cfg.reread = func() (config, error) { return parseConfig(command, args, env, io.Discard) }
	return cfg, nil
}

// defineFlags defines command's flags on fs, landing in v. Every flag but
// --config and -o is also a key of the configuration file and a LEDGER_
// variable.
func defineFlags(fs *flag.FlagSet, command string, v *flagValues) {
	cfg, limits, ns, coalesce := &v.cfg, &v.limits, &v.ns, &v.coalesce
	fs.String(configFlag, "", "YAML file of settings, one key per flag: the flag's name without the dashes (listen-addr: 127.0.0.1:7070); LEDGER_ variables and flags override it")
	if command == "config" {
		fs.StringVar(&cfg.Output, outputFlag, "text", "output format: text (YAML, each value's source in a comment) or json")
	}
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL or DSN (required), e.g. postgres://ledgerd@db:5432/ledger?sslmode=verify-full")
	fs.IntVar(&v.dbMaxConns, "db-max-conns", 16, "maximum database connections; throughput peaks at 4-16 on a small server")
	fs.DurationVar(&cfg.DBStatementTimeout, "db-statement-timeout", 30*time.Second, "statement_timeout of ledgerd's database sessions: a statement running longer is cancelled and its call fails with UNAVAILABLE; 0 for none, negative to keep the database's setting; one set in the DSN wins; migrations run without it")
	fs.DurationVar(&cfg.DBIdleInTransactionTimeout, "db-idle-in-transaction-timeout", 10*time.Second, "idle_in_transaction_session_timeout of ledgerd's database sessions: a session left idle inside a transaction (a stalled replica) is ended and its locks released; 0 for none, negative to keep the database's setting; one set in the DSN wins")
	fs.StringVar(&cfg.LogFormat, "log-format", "auto", "log format: text, json, or auto (text when stdout is a terminal, json otherwise)")
	fs.TextVar(&cfg.LogLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	if command == "bootstrap" {
		fs.StringVar(&cfg.Principal, "principal", "", "the principal (a name) of the first platform admin")
	}
	if command == "restore-fence" {
		fs.StringVar(&cfg.Reason, "reason", "", "why the fencing epoch is raised (required; recorded in the restore_fenced audit event), e.g. the backup restored and the incident")
	}
	// bootstrap's token lives as long as any other: give both commands the
	// same --max-token-ttl.
	fs.DurationVar(&v.maxTokenTTL, "max-token-ttl", ledger.DefaultMaxTokenTTL, "the longest an API token may live: a longer --ttl is refused, and a token created without one (the bootstrap token included) gets this; 0 for no maximum (tokens without a ttl live until revoked)")
	if serves(command) {
		fs.StringVar(&cfg.ReadDatabaseURL, "read-database-url", "", "PostgreSQL URL or DSN of a hot standby that serves ListEntries, GetHistory and ListEvents, which may then lag the primary (ListEvents stops where the standby has replayed); e.g. postgres://ledgerd@db1,db2/ledger?target_session_attrs=prefer-standby. While it cannot be reached, the primary serves them. Empty: the primary serves them")
		fs.IntVar(&v.readDBMaxConns, "read-db-max-conns", 4, "maximum connections to --read-database-url")
		fs.Float64Var(&cfg.RateLimits.PerPrincipal.PerSecond, "rate-limit-principal", 2000, "requests per second each principal may make, per replica (0: unlimited; unlimited by default with --insecure-dev)")
		fs.IntVar(&cfg.RateLimits.PerPrincipal.Burst, "rate-limit-principal-burst", 4000, "burst of --rate-limit-principal")
		fs.Float64Var(&cfg.RateLimits.PerNamespace.PerSecond, "rate-limit-namespace", 5000, "requests per second each namespace may receive, per replica (0: unlimited; unlimited by default with --insecure-dev)")
		fs.IntVar(&cfg.RateLimits.PerNamespace.Burst, "rate-limit-namespace-burst", 10000, "burst of --rate-limit-namespace")
		fs.IntVar(&cfg.MaxWaitingReservesPerPrincipal, "max-waiting-reserves-per-principal", server.DefaultMaxWaitingReservesPerPrincipal, "Reserves of one principal that may wait for a key's holder (wait_timeout) on this replica at once; beyond it, a Reserve answers without waiting (0: no cap)")
		fs.BoolVar(&cfg.InsecureDev, "insecure-dev", false, "development only: serve without authentication (every caller may do everything but manage tokens and role bindings); refuses non-loopback addresses, and a database that holds any token or role binding")
		fs.DurationVar(&cfg.AuthRefreshInterval, "auth-refresh-interval", 5*time.Second, "how often tokens and role bindings are re-read: a revocation takes effect on every replica within it; tokens' last_used_at is written as often; with --insecure-dev, how often the database is checked for credentials (ledgerd stops if it holds any)")
		fs.Float64Var(&cfg.FailedAuthLimit.PerSecond, "auth-failure-rate", server.DefaultFailedAuthLimit.PerSecond, "failed authentications per second each source address (IP) may make once its burst is spent, per replica; a source over it is refused with RESOURCE_EXHAUSTED before its credentials are checked (0: unlimited)")
		fs.IntVar(&cfg.FailedAuthLimit.Burst, "auth-failure-burst", server.DefaultFailedAuthLimit.Burst, "failed authentications a source address may make in a row before --auth-failure-rate applies")
		fs.StringVar(&cfg.ListenAddr, "listen-addr", "127.0.0.1:7070", "gRPC listen address")
		fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:7071", "HTTP listen address: HTTP/JSON gateway (POST /ledger.v1.LedgerService/<Method>), /metrics, /healthz, /readyz; empty or \"off\" disables it")
		fs.BoolVar(&cfg.Console, "console", true, "serve the ops console on the HTTP port under /ui/ (pages that call the API with the caller's own credentials); --console=false: /ui/ is 404")
		fs.IntVar(&cfg.MaxConnections, "max-connections", 10000, "connections each port (gRPC, HTTP) holds at once, authenticated or not; further ones wait in the listen queue until one closes (0: no bound)")
		fs.StringVar(&cfg.MetricsListenAddr, "metrics-listen-addr", "", "serve /metrics on this address only, in plain HTTP without authentication (an internal listener for the scraper, on a private network), and no longer on --http-addr, which anyone who can call the API reaches; empty: /metrics on --http-addr")
		fs.StringVar(&cfg.PprofAddr, "pprof-addr", "", "serve Go's profiles (net/http/pprof, /debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060; off when empty")
		fs.BoolVar(&coalesce.Disabled, "no-coalesce", false, "do not coalesce concurrent Reserves, Completes and Lookups into shared statements (group commit)")
		fs.IntVar(&coalesce.MaxBatch, "coalesce-max-batch", 500, "most calls coalesced into one statement")
		fs.IntVar(&coalesce.MaxInFlight, "coalesce-max-in-flight", 1, "coalesced statements of each kind running at once; calls gather while that many run")
		fs.DurationVar(&coalesce.MaxWait, "coalesce-max-wait", 0, "longest a coalesced statement is held back to gather more calls, only while others run (0: none)")
		fs.BoolVar(&cfg.NoMigrate, "no-migrate", false, "do not apply migrations at start-up; refuse to start if any are pending")
		fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may run after SIGTERM (and after --lame-duck-delay) before they are cut off")
		fs.DurationVar(&cfg.LameDuckDelay, "lame-duck-delay", 0, "on SIGTERM, how long to report NOT_SERVING (gRPC health, /readyz) while still serving calls, before draining: set it to the time your load balancer takes to stop routing to an unhealthy replica (health-check interval × unhealthy threshold, plus one interval); 0 drains at once, which suits gRPC clients (told to go by GOAWAY) and Watch-based health checking. A second SIGTERM or SIGINT cuts it short")
		fs.DurationVar(&cfg.HealthCheckInterval, "health-check-interval", time.Second, "how often the database is pinged to set the health status (gRPC health, /readyz): NOT_SERVING while the ping fails")
		fs.DurationVar(&cfg.HealthCheckTimeout, "health-check-timeout", 2*time.Second, "a health-check ping that takes longer fails")
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
		fs.IntVar(&limits.MaxBatchItems, "max-batch-items", limits.MaxBatchItems, "most items of one ReserveBatch, CompleteBatch or LookupBatch")
		fs.IntVar(&v.maxConcurrentBatches, "max-concurrent-batches", 4, "batch calls running at once; others wait for a slot (bounds their memory)")
		fs.DurationVar(&limits.MinLeaseTTL, "min-lease-ttl", limits.MinLeaseTTL, "shortest lease a request may ask for")
		fs.DurationVar(&limits.MaxWait, "max-wait", limits.MaxWait, "longest a Reserve may wait for the holder of a key (wait_timeout); longer waits are shortened")
		fs.DurationVar(&ns.DefaultLeaseTTL, "default-lease-ttl", ns.DefaultLeaseTTL, "lease given to requests that ask for none (new namespaces)")
		fs.DurationVar(&ns.MaxLeaseTTL, "max-lease-ttl", ns.MaxLeaseTTL, "longest lease a request may ask for (new namespaces)")
		fs.IntVar(&ns.MaxResultBytes, "max-result-bytes", ns.MaxResultBytes, "maximum result size in bytes (new namespaces)")
		fs.DurationVar(&ns.Retention, "retention", ns.Retention, "how long completed and failed entries are kept (new namespaces)")
		fs.DurationVar(&ns.EventRetention, "event-retention", ns.EventRetention, "how long audit events are kept (new namespaces)")
		fs.IntVar(&ns.MaxAttempts, "max-attempts", ns.MaxAttempts, "grants after which a retryable failure is permanent; 0 for no limit (new namespaces)")
		fs.Int64Var(&ns.MaxHeldLeases, "max-held-leases", ns.MaxHeldLeases, "quota: unexpired leases a namespace may hold at once; 0 for no quota (new namespaces)")
		fs.Int64Var(&ns.MaxStoredBytes, "max-stored-bytes", ns.MaxStoredBytes, "quota: bytes a namespace's entries may store (keys, owners, fingerprints, labels, checkpoints, results, errors); 0 for no quota (new namespaces)")
		fs.IntVar(&limits.MaxResultBytes, "max-result-bytes-ceiling", limits.MaxResultBytes, "the largest result size any namespace may allow; sizes the gRPC message limit")
		fs.DurationVar(&limits.MaxRetention, "max-retention", limits.MaxRetention, "the longest retention any namespace may have (platform admins included)")
		fs.DurationVar(&limits.MinEventRetention, "min-event-retention", limits.MinEventRetention, "the shortest event retention any namespace may have; the sweeper keeps every namespace's events at least this long, whatever its stored setting")
		fs.DurationVar(&limits.MaxEventRetention, "max-event-retention", limits.MaxEventRetention, "the longest event retention any namespace may have; at least --max-retention")
		fs.DurationVar(&v.adminEventRetention, "admin-event-retention", v.adminEventRetention, "how long the events of admin actions (force_released, reset, namespace_changed, namespace_created) are kept at least, whatever the namespace's event retention, and how long the platform's events (tokens, role bindings) are kept")
		fs.BoolVar(&v.autoCreateNamespaces, "auto-create-namespaces", false, "a Reserve in a namespace that does not exist creates it with the defaults; off, it fails with NOT_FOUND and an admin creates namespaces (default true with --insecure-dev)")
		fs.IntVar(&v.maxNamespacesPerPattern, "max-namespaces-per-pattern", 100, "most namespaces a principal authorized by a prefix pattern (team-a-*) may create, counted over the namespaces the pattern matches; platform admins are not bound; 0: no bound")
		fs.DurationVar(&cfg.HeartbeatEventInterval, "heartbeat-event-interval", time.Minute, "audit at most one heartbeat event per lease per interval; 0 records every heartbeat, a negative value none")
		grpcFlags(fs, &v.grpcValues)
		tlsFlags(fs, &v.tlsValues)
		fs.DurationVar(&cfg.HTTP.ReadHeaderTimeout, "http-read-header-timeout", 10*time.Second, "HTTP port: how long a request's headers may take to arrive (and a TLS handshake)")
		fs.DurationVar(&cfg.HTTP.BodyReadTimeout, "http-body-read-timeout", time.Minute, "HTTP port: how long an authenticated request's body may take to arrive (408 after); a body of the largest size needs about 3.2 Mbit/s at the default")
		fs.DurationVar(&cfg.HTTP.IdleTimeout, "http-idle-timeout", 2*time.Minute, "HTTP port: how long a keep-alive connection may wait for its next request")
		fs.IntVar(&cfg.HTTP.MaxHeaderBytes, "http-max-header-bytes", 64<<10, "HTTP port: largest request headers (431 for more); at most --grpc-max-header-bytes less 4 KiB")
		fs.Var((*prefixList)(&cfg.HTTP.TrustedProxies), "trusted-proxies", "comma-separated CIDRs of the proxies in front of the HTTP port, whose X-Forwarded-For gives a request's source address (the rightmost address not itself trusted); empty: none, X-Forwarded-For is ignored")
		fs.DurationVar(&v.grpcValues.requestReadTimeout, "grpc-request-read-timeout", time.Minute, "how long a call may wait for its request message after its headers; the largest request needs about 2.4 Mbit/s at the default")
		fs.IntVar(&v.grpcValues.maxPendingRequests, "grpc-max-pending-requests", 10000, "calls, over all connections, that may wait for their request message at once; more are refused with UNAVAILABLE")
	}
}

// check checks the flags' values and turns them into a config.
func (v *flagValues) check(command string, fs *flag.FlagSet) (config, error) {
	cfg, limits, ns, coalesce := v.cfg, v.limits, v.ns, v.coalesce
	autoCreateNamespaces, maxNamespacesPerPattern, adminEventRetention := v.autoCreateNamespaces, v.maxNamespacesPerPattern, v.adminEventRetention
	maxConcurrentBatches, dbMaxConns, readDBMaxConns := v.maxConcurrentBatches, v.dbMaxConns, v.readDBMaxConns
	grpcValues, tlsValues, maxTokenTTL := v.grpcValues, v.tlsValues, v.maxTokenTTL
	var err error
	if cfg.DatabaseURL == "" {
		return config{}, errors.New("--database-url (or LEDGER_DATABASE_URL) is required, or database-url in the --config file")
	}
	for name, r := range map[string]server.Rate{"--rate-limit-principal": cfg.RateLimits.PerPrincipal, "--rate-limit-namespace": cfg.RateLimits.PerNamespace} {
		if r.PerSecond < 0 || (r.PerSecond > 0 && r.Burst < 1) {
			return config{}, fmt.Errorf("%s must not be negative and needs a positive burst, got %g/s burst %d", name, r.PerSecond, r.Burst)
		}
	}
	if cfg.FailedAuthLimit.PerSecond < 0 || (cfg.FailedAuthLimit.PerSecond > 0 && cfg.FailedAuthLimit.Burst < 1) {
		return config{}, fmt.Errorf("--auth-failure-rate must not be negative and needs a positive --auth-failure-burst, got %g/s burst %d",
			cfg.FailedAuthLimit.PerSecond, cfg.FailedAuthLimit.Burst)
	}
	if cfg.FailedAuthLimit.PerSecond == 0 {
		cfg.FailedAuthLimit.PerSecond = -1 // off (zero is server.NewAuth's default)
	}
	if maxTokenTTL < 0 {
		return config{}, fmt.Errorf("--max-token-ttl must not be negative (0: no maximum), got %s", maxTokenTTL)
	}
	if maxTokenTTL == 0 {
		maxTokenTTL = -1 // no maximum (zero is the ledger's default)
	}
	if cfg.MaxConnections < 0 {
		return config{}, fmt.Errorf("--max-connections must not be negative (0: no bound), got %d", cfg.MaxConnections)
	}
	if cfg.MaxWaitingReservesPerPrincipal < 0 {
		return config{}, fmt.Errorf("--max-waiting-reserves-per-principal must not be negative (0: no cap), got %d", cfg.MaxWaitingReservesPerPrincipal)
	}
	if cfg.SweepInterval < 0 {
		return config{}, fmt.Errorf("--sweep-interval must not be negative, got %s", cfg.SweepInterval)
	}
	if cfg.LameDuckDelay < 0 {
		return config{}, fmt.Errorf("--lame-duck-delay must not be negative, got %s", cfg.LameDuckDelay)
	}
	if serves(command) && cfg.ListenAddr == "" {
		// net.Listen("tcp", "") listens on every interface, on a random port.
		return config{}, errors.New("--listen-addr must not be empty: an empty address listens on every interface; give host:port, e.g. 127.0.0.1:7070")
	}
	if serves(command) {
		for name, d := range map[string]time.Duration{"--health-check-interval": cfg.HealthCheckInterval, "--health-check-timeout": cfg.HealthCheckTimeout,
			"--http-read-header-timeout": cfg.HTTP.ReadHeaderTimeout, "--http-body-read-timeout": cfg.HTTP.BodyReadTimeout, "--http-idle-timeout": cfg.HTTP.IdleTimeout} {
			if d <= 0 {
				return config{}, fmt.Errorf("%s must be positive, got %s", name, d)
			}
		}
	}
	if dbMaxConns < 1 || dbMaxConns > 1000 {
		return config{}, fmt.Errorf("--db-max-conns must be between 1 and 1000, got %d", dbMaxConns)
	}
	if serves(command) && (readDBMaxConns < 1 || readDBMaxConns > 1000) {
		return config{}, fmt.Errorf("--read-db-max-conns must be between 1 and 1000, got %d", readDBMaxConns)
	}
	if cfg.LogFormat != "auto" && cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return config{}, fmt.Errorf("--log-format must be auto, text or json, got %q", cfg.LogFormat)
	}
	if cfg.InsecureDev {
		// Development (one anonymous principal, benchmarks): no rate limits
		// unless asked for.
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		if !given["rate-limit-principal"] {
			cfg.RateLimits.PerPrincipal = server.Rate{}
		}
		if !given["rate-limit-namespace"] {
			cfg.RateLimits.PerNamespace = server.Rate{}
		}
		if !given["auto-create-namespaces"] {
			autoCreateNamespaces = true
		}
		for flagName, addr := range map[string]string{"--listen-addr": cfg.ListenAddr, "--http-addr": cfg.HTTPAddr, "--metrics-listen-addr": cfg.MetricsListenAddr} {
			if addr != "" && addr != "off" && !loopback(addr) {
				return config{}, fmt.Errorf("--insecure-dev serves without authentication, so %s must be a loopback address (127.0.0.1, ::1, localhost), got %q", flagName, addr)
			}
		}
	}
	if cfg.PprofAddr != "" && !loopback(cfg.PprofAddr) {
		return config{}, fmt.Errorf("--pprof-addr exposes the process's internals without authentication, so it must be a loopback address (127.0.0.1, ::1, localhost), got %q", cfg.PprofAddr)
	}
	if cfg.HTTPAddr == "off" {
		// An empty environment variable counts as unset, so LEDGER_HTTP_ADDR
		// cannot disable the port by being empty: "off" does.
		cfg.HTTPAddr = ""
	}
	for name, d := range map[string]time.Duration{
		"--db-statement-timeout": cfg.DBStatementTimeout, "--db-idle-in-transaction-timeout": cfg.DBIdleInTransactionTimeout,
	} {
		if d > 0 && d < time.Millisecond {
			return config{}, fmt.Errorf("%s must be at least 1ms (PostgreSQL counts milliseconds), 0 or negative, got %s", name, d)
		}
	}
	cfg.DBMaxConns, cfg.ReadDBMaxConns = int32(dbMaxConns), int32(readDBMaxConns)
	if serves(command) {
		if cfg.GRPC, err = grpcValues.limits(); err != nil {
			return config{}, err
		}
		if cfg.TLS, err = tlsValues.config(); err != nil {
			return config{}, err
		}
		if most := int(cfg.GRPC.MaxHeaderListBytes) - 4<<10; cfg.HTTP.MaxHeaderBytes < 1<<10 || cfg.HTTP.MaxHeaderBytes > most {
			return config{}, fmt.Errorf("--http-max-header-bytes must be between 1 KiB and %d (--grpc-max-header-bytes less 4 KiB, for the gateway's own metadata), got %d", most, cfg.HTTP.MaxHeaderBytes)
		}
	}
	heartbeatEvents := cfg.HeartbeatEventInterval
	if heartbeatEvents == 0 {
		heartbeatEvents = time.Nanosecond // every heartbeat (zero is the ledger's default, 1m)
	}
	if maxNamespacesPerPattern < 0 {
		return config{}, fmt.Errorf("--max-namespaces-per-pattern must not be negative (0: no bound), got %d", maxNamespacesPerPattern)
	}
	cfg.Ledger = ledger.Config{Limits: limits, NamespaceDefaults: ns, HeartbeatEventInterval: heartbeatEvents, Coalesce: coalesce,
		MaxConcurrentBatches: maxConcurrentBatches, NoAutoCreateNamespaces: !autoCreateNamespaces,
		MaxNamespacesPerPattern: maxNamespacesPerPattern, AdminEventRetention: adminEventRetention,
		MaxTokenTTL: maxTokenTTL}
	if err := cfg.Ledger.Validate(); err != nil {
		return config{}, err
	}
	return cfg, nil
}

// prefixList is --trusted-proxies: comma-separated CIDRs.
type prefixList []netip.Prefix

func (l *prefixList) Set(value string) error {
	*l = nil
	for _, cidr := range strings.Split(value, ",") {
		if cidr = strings.TrimSpace(cidr); cidr == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(cidr)
		if err != nil {
			return fmt.Errorf("want CIDRs such as 10.0.0.0/8: %w", err)
		}
		*l = append(*l, prefix.Masked())
	}
	return nil
}

func (l *prefixList) String() string {
	if l == nil {
		return ""
	}
	cidrs := make([]string, len(*l))
	for i, p := range *l {
		cidrs[i] = p.String()
	}
	return strings.Join(cidrs, ",")
}

// logger logs to w as --log-format says; "auto" means text for a person
// at a terminal, JSON for a log collector otherwise.
func (c config) logger(w io.Writer) *slog.Logger {
	return c.loggerAt(w, c.LogLevel)
}

// loggerAt is logger at a level that may change as it logs (a
// *slog.LevelVar, which a reload sets).
func (c config) loggerAt(w io.Writer, level slog.Leveler) *slog.Logger {
	options := &slog.HandlerOptions{Level: level}
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

// maxMessageBytes is gRPC's request size limit, sized from the largest
// request the limits allow (see server.MaxRequestBytes).
func (c config) maxMessageBytes() int {
	return server.MaxRequestBytes(c.Ledger.Limits)
}

// grpcFlagValues are the --grpc-* flags as given.
type grpcFlagValues struct {
	maxSendMsgBytes       int
	maxConcurrentStreams  int
	maxHeaderBytes        int
	keepaliveMinTime      time.Duration
	permitIdlePings       bool
	keepaliveTime         time.Duration
	keepaliveTimeout      time.Duration
	maxConnectionIdle     time.Duration
	maxConnectionAge      time.Duration
	maxConnectionAgeGrace time.Duration
	connectionTimeout     time.Duration
	requestReadTimeout    time.Duration
	maxPendingRequests    int
}

// grpcFlags defines the gRPC server's limits; their defaults are
// server.Limits' (see there and docs/operations.md for the reasons).
func grpcFlags(fs *flag.FlagSet, v *grpcFlagValues) {
	fs.IntVar(&v.maxSendMsgBytes, "grpc-max-send-msg-bytes", 0, "largest response message; 0 for the request limit (sized by --max-result-bytes-ceiling) plus 8 MiB; a larger response fails with RESOURCE_EXHAUSTED")
	fs.IntVar(&v.maxConcurrentStreams, "grpc-max-concurrent-streams", 1000, "calls in flight on one connection (waiting Reserves included); a client with more queues them")
	fs.IntVar(&v.maxHeaderBytes, "grpc-max-header-bytes", 1<<20, "largest metadata (headers) of a call")
	fs.DurationVar(&v.keepaliveMinTime, "grpc-keepalive-min-time", 10*time.Second, "a client that pings more often than this is disconnected (GOAWAY too_many_pings)")
	fs.BoolVar(&v.permitIdlePings, "grpc-keepalive-permit-without-calls", true, "allow client pings on a connection with no call in flight")
	fs.DurationVar(&v.keepaliveTime, "grpc-keepalive-time", time.Minute, "ping a client after this long without activity on its connection")
	fs.DurationVar(&v.keepaliveTimeout, "grpc-keepalive-timeout", 20*time.Second, "close a connection whose client does not answer a ping within this")
	fs.DurationVar(&v.maxConnectionIdle, "grpc-max-connection-idle", 15*time.Minute, "close a connection that has had no call in flight for this long; 0 keeps idle connections")
	fs.DurationVar(&v.maxConnectionAge, "grpc-max-connection-age", 30*time.Minute, "close a connection gracefully after this long (±10%), so that clients spread over the replicas; 0 keeps connections as long as clients want")
	fs.DurationVar(&v.maxConnectionAgeGrace, "grpc-max-connection-age-grace", 0, "how long calls may run on a connection closed for its age; 0 for --max-request-timeout plus 10s")
	fs.DurationVar(&v.connectionTimeout, "grpc-connection-timeout", 10*time.Second, "deadline of a new connection's handshake (TLS and HTTP/2 preface)")
}

// limits checks the --grpc-* flags and turns them into server.Limits.
func (v grpcFlagValues) limits() (server.Limits, error) {
	for name, d := range map[string]time.Duration{
		"--grpc-keepalive-min-time": v.keepaliveMinTime, "--grpc-keepalive-timeout": v.keepaliveTimeout,
		"--grpc-connection-timeout": v.connectionTimeout, "--grpc-request-read-timeout": v.requestReadTimeout,
	} {
		if d <= 0 {
			return server.Limits{}, fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	for name, d := range map[string]time.Duration{
		"--grpc-max-connection-idle": v.maxConnectionIdle, "--grpc-max-connection-age": v.maxConnectionAge,
		"--grpc-max-connection-age-grace": v.maxConnectionAgeGrace,
	} {
		if d < 0 {
			return server.Limits{}, fmt.Errorf("%s must not be negative, got %s", name, d)
		}
	}
	switch {
	case v.keepaliveTime < time.Second:
		return server.Limits{}, fmt.Errorf("--grpc-keepalive-time must be at least 1s, got %s", v.keepaliveTime)
	case v.maxSendMsgBytes < 0:
		return server.Limits{}, fmt.Errorf("--grpc-max-send-msg-bytes must not be negative, got %d", v.maxSendMsgBytes)
	case v.maxConcurrentStreams < 1 || v.maxConcurrentStreams > 1<<20:
		return server.Limits{}, fmt.Errorf("--grpc-max-concurrent-streams must be between 1 and %d, got %d", 1<<20, v.maxConcurrentStreams)
	case v.maxPendingRequests < 1:
		return server.Limits{}, fmt.Errorf("--grpc-max-pending-requests must be positive, got %d", v.maxPendingRequests)
	case v.maxHeaderBytes < 8<<10 || v.maxHeaderBytes > 64<<20:
		return server.Limits{}, fmt.Errorf("--grpc-max-header-bytes must be between 8 KiB and 64 MiB, got %d", v.maxHeaderBytes)
	}
	// 0 means "off" for the flags, "default" for server.Limits.
	off := func(d time.Duration) time.Duration {
		if d == 0 {
			return -1
		}
		return d
	}
	return server.Limits{
		MaxSendMsgBytes:       v.maxSendMsgBytes,
		MaxConcurrentStreams:  uint32(v.maxConcurrentStreams),
		MaxHeaderListBytes:    uint32(v.maxHeaderBytes),
		KeepaliveMinTime:      v.keepaliveMinTime,
		RefuseIdlePings:       !v.permitIdlePings,
		KeepaliveTime:         v.keepaliveTime,
		KeepaliveTimeout:      v.keepaliveTimeout,
		MaxConnectionIdle:     off(v.maxConnectionIdle),
		MaxConnectionAge:      off(v.maxConnectionAge),
		MaxConnectionAgeGrace: v.maxConnectionAgeGrace,
		ConnectionTimeout:     v.connectionTimeout,
		RequestReadTimeout:    v.requestReadTimeout,
		MaxPendingRequests:    v.maxPendingRequests,
	}, nil
}

// tlsFlagValues are the --tls-* flags as given.
type tlsFlagValues struct {
	certFile, keyFile, clientCAFile, clientAuth string
	clientPrincipal, clientIssuerSPKIs          string
}

func tlsFlags(fs *flag.FlagSet, v *tlsFlagValues) {
	fs.StringVar(&v.certFile, "tls-cert-file", "", "PEM certificate (with intermediates) to serve both ports over TLS; re-read when it changes on disk; needs --tls-key-file")
	fs.StringVar(&v.keyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&v.clientCAFile, "tls-client-ca-file", "", "PEM CAs that client certificates are verified against; a verified certificate authenticates as the principal --tls-client-principal names")
	fs.StringVar(&v.clientAuth, "tls-client-auth", "", "client certificates: none, request (verified if given) or require (the handshake fails without one); default require with --tls-client-ca-file, none otherwise")
	fs.StringVar(&v.clientPrincipal, "tls-client-principal", "cn", "the principal of a verified client certificate: cn (cert:<subject CN>) or spiffe (its one URI SAN, a SPIFFE ID spiffe://trust-domain/path, as is)")
	fs.StringVar(&v.clientIssuerSPKIs, "tls-client-issuer-spki", "", "comma-separated sha256:<hex> digests of the public keys (SubjectPublicKeyInfo) of the CAs whose client certificates are principals; a certificate from another CA of --tls-client-ca-file is not (UNAUTHENTICATED). Empty: every CA of --tls-client-ca-file")
}

// config checks the --tls-* flags and turns them into a server.TLSConfig,
// nil without TLS.
func (v tlsFlagValues) config() (*server.TLSConfig, error) {
	if (v.certFile == "") != (v.keyFile == "") {
		return nil, errors.New("--tls-cert-file and --tls-key-file go together: give both or neither")
	}
	if v.certFile == "" {
		if v.clientCAFile != "" || v.clientAuth != "" || v.clientIssuerSPKIs != "" {
			return nil, errors.New("--tls-client-ca-file, --tls-client-auth and --tls-client-issuer-spki need --tls-cert-file and --tls-key-file")
		}
		return nil, nil
	}
	clientAuth := v.clientAuth
	if clientAuth == "" {
		clientAuth = "none"
		if v.clientCAFile != "" {
			clientAuth = "require"
		}
	}
	cfg := &server.TLSConfig{CertFile: v.certFile, KeyFile: v.keyFile, ClientCAFile: v.clientCAFile,
		ClientPrincipal: server.CertificatePrincipal(v.clientPrincipal)}
	switch cfg.ClientPrincipal {
	case server.PrincipalCommonName, server.PrincipalSPIFFEID:
	default:
		return nil, fmt.Errorf("--tls-client-principal must be cn or spiffe, got %q", v.clientPrincipal)
	}
	var err error
	if cfg.ClientIssuerSPKIs, err = parseSPKIDigests(v.clientIssuerSPKIs); err != nil {
		return nil, err
	}
	switch clientAuth {
	case "none":
		cfg.ClientAuth = tls.NoClientCert
	case "request":
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	case "require":
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("--tls-client-auth must be none, request or require, got %q", v.clientAuth)
	}
	switch {
	case clientAuth != "none" && v.clientCAFile == "":
		return nil, fmt.Errorf("--tls-client-auth %s needs --tls-client-ca-file to verify the certificates against", clientAuth)
	case clientAuth == "none" && v.clientCAFile != "":
		return nil, errors.New("--tls-client-auth none ignores --tls-client-ca-file: drop one")
	case clientAuth == "none" && len(cfg.ClientIssuerSPKIs) > 0:
		return nil, errors.New("--tls-client-issuer-spki pins the issuers of client certificates, which --tls-client-auth none does not ask for")
	}
	return cfg, nil
}

// parseSPKIDigests parses --tls-client-issuer-spki: comma-separated
// "sha256:" followed by 64 hex digits, as
//
//	openssl x509 -in ca.pem -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256
//
// prints them.
func parseSPKIDigests(list string) ([][sha256.Size]byte, error) {
	var digests [][sha256.Size]byte
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		hexDigits, ok := strings.CutPrefix(item, "sha256:")
		raw, err := hex.DecodeString(hexDigits)
		if !ok || err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("--tls-client-issuer-spki: %q is not sha256: followed by the 64 hex digits of a SHA-256 digest", item)
		}
		digests = append(digests, [sha256.Size]byte(raw))
	}
	return digests, nil
}

// boundToLoopback checks the address a listener actually bound, for
// --insecure-dev: a name such as localhost may resolve to another
// interface than the configuration check assumed.
func boundToLoopback(flagName string, addr net.Addr) error {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--insecure-dev serves without authentication, but %s bound %s, which is not a loopback address", flagName, addr)
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
