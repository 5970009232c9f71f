package bench

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func TestParseCounters(t *testing.T) {
	t.Parallel()
	const metrics = `# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Reserve",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 120
grpc_server_handled_total{grpc_code="OK",grpc_method="Complete",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 100
grpc_server_handled_total{grpc_code="Aborted",grpc_method="Complete",grpc_service="ledger.v1.LedgerService",grpc_type="unary"} 2
grpc_server_handling_seconds_bucket{grpc_method="Reserve",grpc_service="ledger.v1.LedgerService",grpc_type="unary",le="0.001"} 7
ledgerd_coalesced_calls_total{kind="complete"} 102
ledgerd_coalesced_calls_total{kind="reserve"} 120
ledgerd_coalesced_statements_total{kind="complete"} 51
ledgerd_coalesced_statements_total{kind="reserve"} 40
ledgerd_coalesce_fallbacks_total{kind="reserve"} 0
`
	before, err := parseCounters(strings.NewReader(metrics))
	require.NoError(t, err)
	require.InDelta(t, 222, before.calls, 0)
	require.Equal(t, Coalesced{Calls: 120, Statements: 40}, before.coalesced["reserve"])

	after, err := parseCounters(strings.NewReader(strings.NewReplacer(
		`kind="reserve"} 120`, `kind="reserve"} 420`, `kind="reserve"} 40`, `kind="reserve"} 90`).Replace(metrics)))
	require.NoError(t, err)
	since := after.since(before)
	require.Equal(t, map[string]Coalesced{"reserve": {Calls: 300, Statements: 50, MeanGroup: 6}}, since,
		"kinds without new calls are left out")

	_, err = parseCounters(strings.NewReader("ledgerd_coalesced_calls_total{kind=\"lookup\"} many\n"))
	require.ErrorContains(t, err, "many")
}

func TestWithApplicationName(t *testing.T) {
	t.Parallel()
	got, err := withApplicationName("postgres://u:p@127.0.0.1:5432/ledger?sslmode=disable&application_name=mine", "ledgerbench-ledgerd-2")
	require.NoError(t, err)
	require.Equal(t, "postgres://u:p@127.0.0.1:5432/ledger?application_name=ledgerbench-ledgerd-2&sslmode=disable", got)

	got, err = withApplicationName("host=/run/postgresql dbname=ledger", "ledgerbench-ledgerd-1")
	require.NoError(t, err)
	require.Equal(t, "host=/run/postgresql dbname=ledger application_name=ledgerbench-ledgerd-1", got)

	_, err = withApplicationName("postgres://u:secret@[::1/ledger", "x")
	require.EqualError(t, err, "--database-url is not a valid PostgreSQL URL or DSN")
}

// TestWorkersRoundRobin: worker i calls replica i mod N, and the workers of
// a replica are spread over its connections; with one replica, worker i
// takes connection i mod --grpc-conns, as before there were replicas.
func TestWorkersRoundRobin(t *testing.T) {
	t.Parallel()
	clients := func(replicas, conns int) [][]ledgerv1.LedgerServiceClient {
		out := make([][]ledgerv1.LedgerServiceClient, replicas)
		for i := range out {
			for range conns {
				out[i] = append(out[i], ledgerv1.NewLedgerServiceClient(nil))
			}
		}
		return out
	}
	s := &session{clients: clients(3, 2)}
	for worker, want := range [][2]int{{0, 0}, {1, 0}, {2, 0}, {0, 1}, {1, 1}, {2, 1}, {0, 0}} {
		require.Same(t, s.clients[want[0]][want[1]], s.client(worker), "worker %d", worker)
	}
	s = &session{clients: clients(1, 4)}
	for worker := range 9 {
		require.Same(t, s.clients[0][worker%4], s.client(worker), "worker %d", worker)
	}
}

func TestPrintReplicas(t *testing.T) {
	t.Parallel()
	run := newRunResult("pair", SideLedgerd, 64, measured(1000, 1e9, 5e6))
	run.Replicas = 2
	run.LedgerdPeakRSSBytes = 40 << 20
	run.LedgerdCPUSeconds = 3
	run.PostgresBackends = 10
	run.Coalesced = map[string]Coalesced{"reserve": newCoalesced(1000, 250), "complete": newCoalesced(1000, 200)}
	run.ReplicaResults = []ReplicaResult{
		{Replica: 1, Calls: 1000, PeakRSSBytes: 40 << 20, CPUSeconds: 1.5, PostgresBackends: 5,
			Coalesced: map[string]Coalesced{"reserve": newCoalesced(500, 125), "complete": newCoalesced(500, 100)}},
		{Replica: 2, Calls: 1000, PeakRSSBytes: 38 << 20, CPUSeconds: 1.5, PostgresBackends: 5,
			Coalesced: map[string]Coalesced{"reserve": newCoalesced(500, 125), "complete": newCoalesced(500, 100)}},
	}
	raw := newRunResult("pair", SideRaw, 64, measured(800, 1e9, 8e6))
	report := &Report{Runs: []RunResult{run, raw}, Ratios: ratios([]RunResult{run, raw})}
	var out bytes.Buffer
	report.Print(&out)
	text := out.String()
	require.Contains(t, text, "group reserve  group complete")
	require.Regexp(t, `pair\s+64\s+1\s+1000\s+40\s+1\.5\s+5\s+4\.0\s+5\.0`, text)
	require.Regexp(t, `pair\s+64\s+all\s+2000\s+40\s+3\.0\s+10\s+4\.0\s+5\.0`, text)
	require.Regexp(t, `pair\s+ledgerd\s+2\s+64\s`, text, "the runs table shows the replicas")
	require.Regexp(t, `pair\s+raw\s+-\s+64\s`, text, "and none for the raw side")
	require.Regexp(t, `pair\s+ledgerd\s+2\s+64\s+1000\s+800\s+1\.25`, text, "so does the ratio table")
	require.Equal(t, 2, report.Ratios[0].Replicas)
}
