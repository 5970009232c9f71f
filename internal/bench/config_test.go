package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	require.NoError(t, c.Validate())
	require.Equal(t, []string{"floor", "pair", "replay", "lookup", "contended", "batch"}, c.Workloads)
	require.Equal(t, []int{32}, c.Workers)
	require.Equal(t, 10*time.Second, c.Duration)
	require.Equal(t, 16, c.RawConns, "the raw side's pool is ledgerd's")
	require.Equal(t, 1, c.Replicas)
	require.Equal(t, 16, Config{Replicas: 4}.withDefaults().RawConns, "the raw side's pool does not depend on the replicas")

	require.Zero(t, Config{Ops: 100}.withDefaults().Duration, "--ops alone ends a workload by count")
	require.Equal(t, 8, Config{DBMaxConns: 8}.withDefaults().RawConns)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string // the message names the flag and the bound
	}{
		{"workers too few", Config{Workers: []int{32, 0}}, "--workers must be between 1 and 4096, got 0"},
		{"workers too many", Config{Workers: []int{5000}}, "--workers must be between 1 and 4096, got 5000"},
		{"unknown workload", Config{Workloads: []string{"pair", "nope"}}, `--workloads: unknown workload "nope" (known: floor, pair, replay, lookup, contended, batch)`},
		{"unknown side", Config{Sides: []string{"both"}}, `--sides: unknown side "both"`},
		{"batch size", Config{BatchSize: 2000}, "--batch-size must be between 1 and 1000, got 2000"},
		{"negative rate", Config{Rate: -1}, "--rate must be between 0 and 10000000, got -1"},
		{"negative prefill", Config{Prefill: -1}, "--prefill must be between 0 and 1000000000, got -1"},
		{"negative duration", Config{Duration: -time.Second}, "--duration must be between 0s and 24h0m0s, got -1s"},
		{"lease too short", Config{ContendedLeaseTTL: time.Microsecond}, "--contended-lease-ttl must be between 1ms and 1h0m0s, got 1µs"},
		{"raw conns", Config{RawConns: 1001}, "--raw-conns must be between 1 and 1000, got 1001"},
		{"token without addr", Config{Token: "ldg_x"}, "--token needs --addr"},
		{"raw side needs the database", Config{Addr: "db:7070"}, "--database-url is needed with --addr for the raw side"},
		{"prefill needs the database", Config{Addr: "db:7070", Sides: []string{SideLedgerd}, Prefill: 10}, "--database-url is needed with --addr for --prefill"},
		{"binary with addr", Config{Addr: "db:7070", DatabaseURL: "postgres://x", LedgerdBin: "ledgerd"}, "--ledgerd-bin starts a ledgerd"},
		{"pg dir with url", Config{DatabaseURL: "postgres://x", PGDir: "d"}, "--pg-dir starts a private PostgreSQL"},
		{"replicas negative", Config{Replicas: -1}, "--replicas must be between 1 and 16, got -1"},
		{"replicas too many", Config{Replicas: 17}, "--replicas must be between 1 and 16, got 17"},
		{"replicas with addr", Config{Addr: "db:7070", Sides: []string{SideLedgerd}, Replicas: 2}, "--replicas starts that many ledgerd processes, so it cannot go with --addr"},
		{"http addr of a started ledgerd", Config{LedgerdArgs: []string{"--no-coalesce", "-http-addr=:8080"}}, "--ledgerd-flag cannot set --http-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
	require.NoError(t, Config{Addr: "db:7070", Sides: []string{SideLedgerd}}.Validate())
	require.NoError(t, Config{Replicas: MaxReplicas, LedgerdArgs: []string{"--http-timeout=1s"}}.Validate())
}
