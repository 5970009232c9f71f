package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func noEnv(string) string { return "" }

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("ldg_secret\n"), 0o600))
	cfg, err := parseFlags([]string{
		"--addr", "127.0.0.1:7070", "--insecure", "--token-file", tokenFile,
		"--database-url", "postgres://x", "--workers", "32, 64", "--workloads", "pair,replay",
		"--duration", "5s", "--warmup", "0", "--json", "out.json",
	}, noEnv, &bytes.Buffer{})
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, []int{32, 64}, cfg.Workers)
	require.Equal(t, []string{"pair", "replay"}, cfg.Workloads)
	require.Equal(t, 5*time.Second, cfg.Duration)
	require.Negative(t, cfg.Warmup, "--warmup 0 is none, not the default")
	require.Equal(t, "ldg_secret", cfg.Token)
	require.Equal(t, 1, cfg.Replicas, "one ledgerd unless --replicas")

	cfg, err = parseFlags([]string{"--ledgerd-flag=--db-max-conns=8", "--ledgerd-flag", "--max-wait=1s"},
		func(name string) string { return map[string]string{"LEDGERBENCH_TOKEN": "ldg_env"}[name] }, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"--db-max-conns=8", "--max-wait=1s"}, cfg.LedgerdArgs)
	require.Equal(t, "ldg_env", cfg.Token)

	cfg, err = parseFlags([]string{"--secure", "--idle", "60s", "--idle-waiters", "10000"}, noEnv, &bytes.Buffer{})
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, []string{"ledgerd", "secure", "raw"}, cfg.Sides, "--secure adds its side after ledgerd's")
	require.Equal(t, time.Minute, cfg.Idle)
	require.Equal(t, 10000, cfg.IdleWaiters)

	cfg, err = parseFlags([]string{"--secure", "--sides", "raw"}, noEnv, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"secure", "raw"}, cfg.Sides)

	cfg, err = parseFlags([]string{"--replicas", "4", "--db-max-conns", "4"}, noEnv, &bytes.Buffer{})
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, 4, cfg.Replicas)
	require.Equal(t, 4, cfg.DBMaxConns, "per replica")
}

func TestRunRefusesBadFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--workers", "32,x"}, `--workers: "x" is not a number`},
		{[]string{"--workers", "0"}, "--workers must be between 1 and 4096, got 0"},
		{[]string{"--batch-size", "200000"}, "--batch-size must be between 1 and 1000, got 200000"},
		{[]string{"--token", "ldg_x"}, "--token needs --addr"},
		{[]string{"--replicas", "0"}, "--replicas must be between 1 and 16, got 0"},
		{[]string{"--replicas", "17"}, "--replicas must be between 1 and 16, got 17"},
		{[]string{"--replicas", "2", "--addr", "db:7070", "--sides", "ledgerd"}, "--replicas starts that many ledgerd processes, so it cannot go with --addr"},
		{[]string{"--ledgerd-flag=--http-addr=127.0.0.1:7071"}, "--ledgerd-flag cannot set --http-addr"},
		{[]string{"--workloads", "pair,fly"}, `unknown workload "fly"`},
		{[]string{"--sides", "ledgerd,tls"}, `--sides: unknown side "tls" (known: ledgerd, secure, raw)`},
		{[]string{"--secure", "--addr", "db:7070", "--sides", "ledgerd"}, "--secure starts a ledgerd with TLS and tokens, so it cannot go with --addr"},
		{[]string{"--idle", "10s", "--addr", "db:7070", "--sides", "ledgerd"}, "--idle reads the CPU time and memory of a ledgerd it starts"},
		{[]string{"--idle-waiters", "10"}, "--idle-waiters needs --idle"},
		{[]string{"--idle", "1s", "--idle-waiters", "200000"}, "--idle-waiters must be between 0 and 100000, got 200000"},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"extra"}, `unexpected arguments: ["extra"]`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tt.args, noEnv, &stdout, &stderr)
		require.Equal(t, 2, code, "%v", tt.args)
		require.Contains(t, stderr.String(), tt.want, "%v", tt.args)
		require.Empty(t, stdout.String())
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, noEnv, &bytes.Buffer{}, &stderr))
	for _, want := range []string{"contended", "batch", "--prefill", "--database-url", "--json", "--replicas", "floor", "--secure", "--idle", "--idle-waiters"} {
		require.Contains(t, stderr.String(), want)
	}
}
