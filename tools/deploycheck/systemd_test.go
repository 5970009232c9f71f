package deploycheck

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unitSettings reads a systemd unit file: each key's values, in order
// (a key may repeat), ignoring sections and comments.
func unitSettings(t *testing.T, file string) map[string][]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "[") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", file, line)
		}
		settings[key] = append(settings[key], value)
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return settings
}

// TestSystemdUnit checks deploy/systemd against ledgerd: ExecStart's flags,
// the example config file's keys and environment file's variables exist,
// the stop timeout covers the drain, and the hardening the docs promise is
// there. systemd-analyze verify (make systemd-check) checks the syntax.
func TestSystemdUnit(t *testing.T) {
	serve := ledgerdFlags(t, "serve")
	dir := filepath.Join(repoRoot, "deploy/systemd")
	unit := unitSettings(t, filepath.Join(dir, "ledgerd.service"))

	execStart := strings.Fields(strings.Join(unit["ExecStart"], " "))
	if len(execStart) < 2 || execStart[0] != "/usr/local/bin/ledgerd" {
		t.Fatalf("ExecStart %q: want /usr/local/bin/ledgerd serve ...", execStart)
	}
	checkArgs(t, "ExecStart", execStart[1:], serve)

	config := ""
	for i, arg := range execStart {
		if arg == "--config" && i+1 < len(execStart) {
			config = execStart[i+1]
		}
	}
	if config != "/etc/ledgerd/ledgerd.yaml" {
		t.Fatalf("ExecStart passes --config %q, want the example's /etc/ledgerd/ledgerd.yaml", config)
	}
	text, err := os.ReadFile(filepath.Join(dir, "ledgerd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	settings := yamlSettings(t, "ledgerd.yaml", text)
	for name := range settings {
		if !serve.known(name) {
			t.Errorf("ledgerd.yaml: key %q is not a flag of `ledgerd serve --help`", name)
		}
	}
	checkStarts(t, serve, settings, string(text))
	if _, ok := settings["database-url"]; ok {
		t.Error("ledgerd.yaml holds the database URL: it is readable by all, the URL belongs in the 0600 environment file")
	}

	envFile := unitSettings(t, filepath.Join(dir, "ledgerd.env.example"))
	for variable := range envFile {
		if !serve.knownEnv(variable) {
			t.Errorf("ledgerd.env.example: %s backs no flag of ledgerd serve", variable)
		}
	}
	if _, ok := envFile["LEDGER_DATABASE_URL"]; !ok {
		t.Error("ledgerd.env.example does not set LEDGER_DATABASE_URL")
	}

	var drain time.Duration
	for _, setting := range []string{"lame-duck-delay", "shutdown-timeout"} {
		value, ok := settings[setting]
		if !ok {
			t.Fatalf("ledgerd.yaml does not set %s, which TimeoutStopSec is sized for", setting)
		}
		d, err := time.ParseDuration(value)
		if err != nil {
			t.Fatalf("ledgerd.yaml: %s %q: %v", setting, value, err)
		}
		drain += d
	}
	stop, err := time.ParseDuration(strings.Join(unit["TimeoutStopSec"], ""))
	if err != nil || stop <= drain {
		t.Errorf("TimeoutStopSec %q must exceed --lame-duck-delay + --shutdown-timeout (%s): %v", unit["TimeoutStopSec"], drain, err)
	}

	want := map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
		"Restart": "on-failure", "KillSignal": "SIGTERM", "EnvironmentFile": "/etc/ledgerd/ledgerd.env",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	}
	for key, value := range want {
		if got, ok := unit[key]; !ok || got[len(got)-1] != value {
			t.Errorf("%s=%q, want %q", key, got, value)
		}
	}
	if filters := unit["SystemCallFilter"]; len(filters) == 0 || filters[0] != "@system-service" {
		t.Errorf("SystemCallFilter %q: want @system-service first", filters)
	}
}
