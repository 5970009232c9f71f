package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/server"
)

// writeConfig writes a configuration file into a test's directory and
// returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledgerd.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// sourceOf returns where a setting's value came from.
func sourceOf(t *testing.T, cfg config, key string) source {
	t.Helper()
	s, ok := cfg.Layers.setting(key)
	require.True(t, ok, key)
	return s.Source
}

// TestConfigFileOverridesDefaults: a key of the file replaces the flag's
// default; keys the file leaves out keep theirs.
func TestConfigFileOverridesDefaults(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "listen-addr: 127.0.0.1:7170\nrate-limit-principal: 300\nshutdown-timeout: \"45s\"\nno-coalesce: true\n"+
		"trusted-proxies: [10.0.0.0/8, 192.168.0.0/16]\n")
	cfg, err := parseServe([]string{"--config", path}, nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7170", cfg.ListenAddr)
	require.InDelta(t, 300, cfg.RateLimits.PerPrincipal.PerSecond, 0)
	require.Equal(t, 45*time.Second, cfg.ShutdownTimeout)
	require.True(t, cfg.Ledger.Coalesce.Disabled)
	require.Len(t, cfg.HTTP.TrustedProxies, 2, "a YAML list for a comma-separated flag")
	require.Equal(t, fromFile, sourceOf(t, cfg, "listen-addr"))
	require.Equal(t, "127.0.0.1:7071", cfg.HTTPAddr, "a key the file leaves out keeps its default")
	require.Equal(t, fromDefault, sourceOf(t, cfg, "http-addr"))
	require.Equal(t, path, cfg.Layers.File)
}

// TestEnvironmentOverridesConfigFile: a LEDGER_ variable beats the file's
// key, and LEDGER_CONFIG names the file as --config does.
func TestEnvironmentOverridesConfigFile(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "max-key-bytes: 100\nretention: 48h\n")
	cfg, err := parseServe(nil, map[string]string{"LEDGER_CONFIG": path, "LEDGER_MAX_KEY_BYTES": "200"})
	require.NoError(t, err)
	require.Equal(t, 200, cfg.Ledger.Limits.MaxKeyBytes, "the variable beats the file")
	require.Equal(t, fromEnvironment, sourceOf(t, cfg, "max-key-bytes"))
	require.Equal(t, 48*time.Hour, cfg.Ledger.NamespaceDefaults.Retention, "the file is read from LEDGER_CONFIG")
	require.Equal(t, fromFile, sourceOf(t, cfg, "retention"))
}

// TestFlagsOverrideConfigFile: a flag beats the file's key, and --config
// beats LEDGER_CONFIG.
func TestFlagsOverrideConfigFile(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "max-key-bytes: 100\n")
	other := writeConfig(t, "max-key-bytes: 999\n")
	cfg, err := parseServe([]string{"--config", path, "--max-key-bytes", "300"}, map[string]string{"LEDGER_CONFIG": other})
	require.NoError(t, err)
	require.Equal(t, 300, cfg.Ledger.Limits.MaxKeyBytes)
	require.Equal(t, fromFlag, sourceOf(t, cfg, "max-key-bytes"))
	require.Equal(t, path, cfg.Layers.File, "--config beats LEDGER_CONFIG")
}

// TestAllFourLayers: one setting from each layer, and one set in every
// layer, which the command line wins.
func TestAllFourLayers(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "max-owner-bytes: 101\nmax-error-bytes: 102\nmax-checkpoint-bytes: 103\n")
	cfg, err := parseServe([]string{"--config", path, "--max-checkpoint-bytes", "303"}, map[string]string{
		"LEDGER_MAX_ERROR_BYTES": "202", "LEDGER_MAX_CHECKPOINT_BYTES": "203",
	})
	require.NoError(t, err)
	limits := cfg.Ledger.Limits
	require.Equal(t, 512, limits.MaxKeyBytes, "default")
	require.Equal(t, 101, limits.MaxOwnerBytes, "file over default")
	require.Equal(t, 202, limits.MaxErrorBytes, "environment over file")
	require.Equal(t, 303, limits.MaxCheckpointBytes, "flag over environment over file")
	for key, want := range map[string]source{"max-key-bytes": fromDefault, "max-owner-bytes": fromFile, "max-error-bytes": fromEnvironment, "max-checkpoint-bytes": fromFlag, "database-url": fromFlag} {
		require.Equal(t, want, sourceOf(t, cfg, key), key)
	}
}

// TestConfigFileErrors: every refusal names the key (and the file, with
// the line), and the closest valid key or the value and the rule; a
// refusal by a check after parsing says where the value came from. Values
// refused are refused even where a later layer overrides them.
func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		file string
		args []string
		want string
	}{
		{"listen-adr: 127.0.0.1:7070\n", nil, `unknown key "listen-adr" in FILE (line 1): did you mean "listen-addr"?`},
		{"# comment\nrate-limit-principle: 5\n", nil, `unknown key "rate-limit-principle" in FILE (line 2): did you mean "rate-limit-principal"?`},
		{"config: other.yaml\n", nil, `unknown key "config" in FILE (line 1)`},
		{"shutdown-timeout: 30\n", nil, `invalid value "30" for key "shutdown-timeout" in FILE (line 1): want a Go duration such as 500ms, 30s, 5m or 1h30m`},
		{"shutdown-timeout: 30\n", []string{"--shutdown-timeout", "1s"}, `invalid value "30" for key "shutdown-timeout"`},
		{"db-max-conns: many\n", nil, `invalid value "many" for key "db-max-conns" in FILE (line 1): want a whole number`},
		{"no-coalesce: yes\n", nil, `invalid value "yes" for key "no-coalesce" in FILE (line 1): want true or false`},
		{"log-level: loud\n", nil, `invalid value "loud" for key "log-level" in FILE (line 1): want debug, info, warn or error`},
		{"trusted-proxies: [10.0.0.0]\n", nil, `invalid value "10.0.0.0" for key "trusted-proxies" in FILE (line 1): want CIDRs such as 10.0.0.0/8`},
		{"db-max-conns: 0\n", nil, `--db-max-conns must be between 1 and 1000, got 0 (db-max-conns "0" is set in FILE)`},
		{"http-addr:\n", nil, `key "http-addr" in FILE (line 1) has no value`},
		{"listen-addr: a\nlisten-addr: b\n", nil, `key "listen-addr" appears twice in FILE (lines 1 and 2)`},
		{"listen-addr: [a, b]\n", nil, `key "listen-addr" in FILE (line 1) must have a single value`},
		{"- listen-addr\n", nil, `FILE (line 1) must be a mapping of keys to values`},
		{"listen-addr: [\n", nil, `FILE is not valid YAML`},
		{"listen-addr: a\n---\nhttp-addr: b\n", nil, `FILE holds more than one YAML document`},
	}
	for _, tc := range cases {
		path := writeConfig(t, tc.file)
		_, err := parseServe(append([]string{"--config", path}, tc.args...), nil)
		require.Error(t, err, tc.file)
		require.Contains(t, err.Error(), strings.ReplaceAll(tc.want, "FILE", path), tc.file)
	}
	_, err := parseServe([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, nil)
	require.ErrorContains(t, err, "missing.yaml: no such file or directory")

	cfg, err := parseServe([]string{"--config", writeConfig(t, "# nothing set yet\n")}, nil)
	require.NoError(t, err, "a file of comments sets nothing")
	require.Equal(t, "127.0.0.1:7070", cfg.ListenAddr)
}

// TestValuesRefusedTheSameEverywhere: the flag, the variable and the file
// refuse a bad value with the same rule, not the flag package's "parse
// error".
func TestValuesRefusedTheSameEverywhere(t *testing.T) {
	t.Parallel()
	const rule = "want a Go duration such as 500ms, 30s, 5m or 1h30m"
	var stderr ledgertest.LogBuffer
	_, err := parseConfig("serve", []string{"--database-url", "postgres://x/y", "--lame-duck-delay", "5"}, env(nil), &stderr)
	require.ErrorContains(t, err, `invalid value "5" for flag -lame-duck-delay: `+rule)
	_, err = parseServe(nil, map[string]string{"LEDGER_LAME_DUCK_DELAY": "5"})
	require.ErrorContains(t, err, `invalid value "5" for LEDGER_LAME_DUCK_DELAY: `+rule)
	_, err = parseServe([]string{"--config", writeConfig(t, "lame-duck-delay: 5\n")}, nil)
	require.ErrorContains(t, err, `for key "lame-duck-delay" in `)
	require.ErrorContains(t, err, rule)
	_, err = parseServe([]string{"--lame-duck-delay", "-1s"}, map[string]string{})
	require.ErrorContains(t, err, "--lame-duck-delay must not be negative")
	_, err = parseServe(nil, map[string]string{"LEDGER_LAME_DUCK_DELAY": "-1s"})
	require.ErrorContains(t, err, `--lame-duck-delay must not be negative, got -1s (lame-duck-delay "-1s" is set by LEDGER_LAME_DUCK_DELAY)`)
}

// TestUnknownVariables: a LEDGER_ variable that names no setting is an
// error naming the closest; the tooling's variables, another command's,
// and empty ones are let be.
func TestUnknownVariables(t *testing.T) {
	t.Parallel()
	_, err := parseServe(nil, map[string]string{"LEDGER_LISTEN_ADR": "127.0.0.1:1", "LEDGER_DB_MAXCONNS": "4"})
	require.ErrorContains(t, err, "unknown variable LEDGER_LISTEN_ADR in the environment: did you mean LEDGER_LISTEN_ADDR?")
	require.ErrorContains(t, err, "unknown variable LEDGER_DB_MAXCONNS in the environment: did you mean LEDGER_DB_MAX_CONNS?")
	_, err = parseServe(nil, map[string]string{"LEDGER_CONFIG_FILE": "x.yaml"})
	require.ErrorContains(t, err, "did you mean LEDGER_CONFIG?")

	tooling := map[string]string{
		"LEDGER_TEST_DATABASE_URL": "postgres://t/t", "LEDGER_TEST_NO_COALESCE": "1", "LEDGER_PG_BINDIR": "/usr/lib/postgresql/17/bin",
		"LEDGER_FUZZTIME": "500x", "LEDGER_NO_COALESCE_ARGS": "-race ./ledger/", "LEDGER_SOMETHING_EMPTY": "",
		"LEDGER_PRINCIPAL": "root", // bootstrap's
		"LEDGERCTL_ADDR":   "127.0.0.1:7070",
	}
	_, err = parseServe(nil, tooling)
	require.NoError(t, err)

	var stderr ledgertest.LogBuffer
	cfg, err := parseConfig("migrate", nil, env(map[string]string{"LEDGER_DATABASE_URL": "postgres://x/y", "LEDGER_LISTEN_ADDR": "0.0.0.0:7070"}), &stderr)
	require.NoError(t, err, "migrate shares serve's environment")
	require.Equal(t, "postgres://x/y", cfg.DatabaseURL)
}

// TestOneFileForEveryCommand: migrate and bootstrap read the file that
// serve reads (a Helm chart's migration Job mounts serve's), and ignore
// the keys they do not take; a key no command takes is still refused.
func TestOneFileForEveryCommand(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "database-url: postgres://file/db\nlisten-addr: 0.0.0.0:7070\ndb-max-conns: 7\nprincipal: root\n")
	var stderr ledgertest.LogBuffer
	cfg, err := parseConfig("migrate", []string{"--config", path}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, "postgres://file/db", cfg.DatabaseURL)
	require.Equal(t, int32(7), cfg.DBMaxConns)
	cfg, err = parseConfig("bootstrap", []string{"--config", path}, env(nil), &stderr)
	require.NoError(t, err)
	require.Equal(t, "root", cfg.Principal)
	_, err = parseConfig("migrate", []string{"--config", writeConfig(t, "listen-adr: x\n")}, env(nil), &stderr)
	require.ErrorContains(t, err, `unknown key "listen-adr"`)
}

// TestConfigCommand: `ledgerd config` prints every setting with its value
// and source, secrets redacted, as YAML that serve reads back, or as JSON.
func TestConfigCommand(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "listen-addr: 127.0.0.1:7170\nhttp-addr: \"off\"\nread-database-url: host=standby user=ledgerd password='s3 cret' dbname=ledger\n")
	vars := map[string]string{"LEDGER_DATABASE_URL": "postgres://ledgerd:hunter2@db1:5432,db2:5432/ledger?sslpassword=pem-secret&sslmode=verify-full", "LEDGER_DB_MAX_CONNS": "8"}
	var stdout, stderr ledgertest.LogBuffer
	require.NoError(t, run(context.Background(), []string{"config", "--config", path, "--log-level", "debug"}, env(vars), &stdout, &stderr))
	out := stdout.String()
	require.NotContains(t, out, "hunter2")
	require.NotContains(t, out, "pem-secret")
	require.NotContains(t, out, "s3 cret")
	for _, line := range []string{
		"listen-addr: 127.0.0.1:7170 # file " + path,
		"http-addr: off # file " + path,
		"database-url: postgres://ledgerd:REDACTED@db1:5432,db2:5432/ledger?sslpassword=REDACTED&sslmode=verify-full # env LEDGER_DATABASE_URL",
		"read-database-url: host=standby user=ledgerd password=REDACTED dbname=ledger # file " + path,
		"db-max-conns: 8 # env LEDGER_DB_MAX_CONNS",
		"log-level: DEBUG # flag --log-level",
		"shutdown-timeout: 30s # default",
		"no-coalesce: false # default",
	} {
		require.Contains(t, out, "\n"+line+"\n")
	}
	var printed map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(out), &printed))
	var help ledgertest.LogBuffer
	require.ErrorIs(t, run(context.Background(), []string{"serve", "--help"}, env(nil), &stdout, &help), flag.ErrHelp)
	for key := range printed {
		require.Contains(t, help.String(), "--"+key+" (", "every printed key is a flag")
	}
	require.Len(t, printed, strings.Count(help.String(), "\n  --")-1, "every flag but --config is printed")

	// Printed back as a file, with the database URL from the environment, it
	// is the same configuration.
	again := writeConfig(t, out)
	var reread ledgertest.LogBuffer
	require.NoError(t, run(context.Background(), []string{"config", "--config", again}, env(map[string]string{"LEDGER_DATABASE_URL": "postgres://x/y"}), &reread, &stderr))
	require.Contains(t, reread.String(), "\nlog-level: DEBUG # file "+again+"\n")
	require.Contains(t, reread.String(), "\nhttp-addr: off # file "+again+"\n")

	var jsonOut ledgertest.LogBuffer
	require.NoError(t, run(context.Background(), []string{"config", "--config", path, "-o", "json"}, env(vars), &jsonOut, &stderr))
	var asJSON struct {
		File     string `json:"file"`
		Settings []struct {
			Key    string `json:"key"`
			Value  string `json:"value"`
			Source string `json:"source"`
			Origin string `json:"origin"`
		} `json:"settings"`
	}
	require.NoError(t, json.Unmarshal([]byte(jsonOut.String()), &asJSON))
	require.Equal(t, path, asJSON.File)
	found := 0
	for _, s := range asJSON.Settings {
		switch s.Key {
		case "database-url":
			require.Equal(t, "env", s.Source)
			require.Equal(t, "LEDGER_DATABASE_URL", s.Origin)
			require.Contains(t, s.Value, "REDACTED")
			found++
		case "listen-addr":
			require.Equal(t, []string{"127.0.0.1:7170", "file", path}, []string{s.Value, s.Source, s.Origin})
			found++
		case "request-timeout":
			require.Equal(t, []string{"10s", "default", ""}, []string{s.Value, s.Source, s.Origin})
			found++
		}
	}
	require.Equal(t, 3, found)

	err := run(context.Background(), []string{"config", "--database-url", "postgres://x/y", "-o", "xml"}, env(nil), &stdout, &stderr)
	require.ErrorContains(t, err, `-o must be text or json, got "xml"`)
}

// TestRedact: database URLs lose their passwords, in every form pgx
// accepts, and nothing else.
func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://ledgerd:p@ss@w0rd@db/ledger":           "postgres://ledgerd:REDACTED@db/ledger",
		"postgresql://ledgerd@db/ledger?password=x&a=b":    "postgresql://ledgerd@db/ledger?password=REDACTED&a=b",
		`host=db password = 'it\'s' user=u`:                "host=db password = REDACTED user=u",
		"password=abc host=db":                             "password=REDACTED host=db",
		"postgres://ledgerd@db/ledger?sslmode=verify-full": "postgres://ledgerd@db/ledger?sslmode=verify-full",
	} {
		require.Equal(t, want, redact("database-url", in), in)
		require.Equal(t, want, redact("read-database-url", in), in)
	}
	require.Equal(t, "REDACTED", redact("client-secret", "s"))
	require.Equal(t, "2160h0m0s", redact("max-token-ttl", "2160h0m0s"))
}

// TestExampleConfigFile: deploy/ledgerd.yaml loads, each of its keys is
// in force, and each key it shows commented out loads too, so that the
// example never drifts from the flags.
func TestExampleConfigFile(t *testing.T) {
	t.Parallel()
	const example = "../../deploy/ledgerd.yaml"
	cfg, err := parseServe([]string{"--config", example}, nil)
	require.NoError(t, err)
	content, err := os.ReadFile(example)
	require.NoError(t, err)
	var keys map[string]any
	require.NoError(t, yaml.Unmarshal(content, &keys))
	require.NotEmpty(t, keys)
	for key := range keys {
		require.Equal(t, fromFile, sourceOf(t, cfg, key), key)
	}
	require.Equal(t, "0.0.0.0:7070", cfg.ListenAddr)

	commented := regexp.MustCompile(`(?m)^# ([a-z0-9-]+: .*)$`).FindAllStringSubmatch(string(content), -1)
	require.NotEmpty(t, commented)
	var uncommented strings.Builder
	for _, m := range commented {
		uncommented.WriteString(m[1] + "\n")
	}
	_, err = parseServe([]string{"--config", writeConfig(t, uncommented.String())}, nil)
	require.NoError(t, err, "the commented-out keys:\n%s", uncommented.String())
}

// TestRateLimitsOfReloadedConfig: what a reload would apply is what a
// start would run with (the server's own test covers the buckets).
func TestRateLimitsOfReloadedConfig(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "rate-limit-principal: 10\n")
	cfg, err := parseServe([]string{"--config", path}, nil)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte("rate-limit-principal: 20\nrate-limit-principal-burst: 5\n"), 0o600))
	next, err := cfg.reread()
	require.NoError(t, err)
	require.Equal(t, server.Rate{PerSecond: 20, Burst: 5}, next.RateLimits.PerPrincipal)
}
