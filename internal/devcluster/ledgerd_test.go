package devcluster_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// ledgerdArgs are the flags of the tests' ledgerd processes.
var ledgerdArgs = []string{"--insecure-dev", "--http-addr", "off", "--log-format", "json", "--shutdown-timeout", "5s"}

// requireServing asks the ledgerd at addr whether it serves.
func requireServing(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, r.GetStatus())
}

// TestLedgerd builds ledgerd and starts it over a cluster of its own: it
// serves, stops, restarts on its address, reports why it could not start,
// and moves off a port that was taken.
func TestLedgerd(t *testing.T) {
	pg := startPostgres(t, devcluster.PostgresConfig{Durability: devcluster.Throwaway})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := devcluster.ModuleRoot()
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "ledgerd")
	require.NoError(t, devcluster.BuildLedgerd(ctx, root, bin))
	cfg := devcluster.LedgerdConfig{Binary: bin, DatabaseURL: pg.URL(), Args: ledgerdArgs}

	t.Run("serves and stops", func(t *testing.T) {
		l, err := devcluster.StartLedgerd(ctx, cfg)
		require.NoError(t, err)
		requireServing(t, l.Addr())
		require.True(t, l.Running())
		pid := l.PID()
		require.NoError(t, syscall.Kill(pid, 0))
		require.FileExists(t, l.LogPath())
		require.Contains(t, l.LogTail(20), "ledgerd serving")

		require.NoError(t, l.Stop(), "a clean exit on SIGTERM")
		require.False(t, l.Running())
		requireGone(t, pid)
		requireNoPath(t, filepath.Dir(l.LogPath())) // the temporary log's directory
		require.NoError(t, l.Stop(), "stopping a stopped ledgerd does nothing")
	})

	t.Run("restarts on its address", func(t *testing.T) {
		withLog := cfg
		withLog.Name = "replica"
		withLog.LogPath = filepath.Join(t.TempDir(), "replica.log")
		l, err := devcluster.StartLedgerd(ctx, withLog)
		require.NoError(t, err)
		defer func() { require.NoError(t, l.Stop()) }()
		addr, first := l.Addr(), l.PID()

		require.ErrorContains(t, l.Restart(ctx), "replica: it is running already")
		require.NoError(t, l.Signal(syscall.SIGKILL))
		require.ErrorContains(t, l.Wait(goneTimeout), "killed")
		require.False(t, l.Running())
		require.ErrorContains(t, l.Signal(syscall.SIGTERM), "not running")

		require.NoError(t, l.Restart(ctx))
		require.Equal(t, addr, l.Addr())
		require.NotEqual(t, first, l.PID())
		requireServing(t, addr)
		log, err := os.ReadFile(withLog.LogPath)
		require.NoError(t, err)
		require.Equal(t, 2, strings.Count(string(log), `"msg":"ledgerd serving"`), "the log keeps both runs")
	})

	t.Run("fails with its log", func(t *testing.T) {
		bad := cfg
		bad.Args = append([]string{"--no-such-flag"}, ledgerdArgs...)
		l, err := devcluster.StartLedgerd(ctx, bad)
		require.Nil(t, l)
		t.Log(err)
		require.ErrorContains(t, err, "exited before it served")
		require.ErrorContains(t, err, "flag provided but not defined: -no-such-flag", "the tail of its log")
	})

	t.Run("moves off a taken port", func(t *testing.T) {
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer func() { _ = taken.Close() }()
		var picked []string
		pick := func() (string, error) {
			if len(picked) == 0 {
				picked = append(picked, taken.Addr().String())
				return taken.Addr().String(), nil
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", err
			}
			defer func() { _ = l.Close() }()
			picked = append(picked, l.Addr().String())
			return l.Addr().String(), nil
		}
		l, err := devcluster.StartLedgerdPicking(ctx, cfg, pick)
		require.NoError(t, err)
		defer func() { require.NoError(t, l.Stop()) }()
		require.Len(t, picked, 2)
		require.Equal(t, picked[1], l.Addr())
		requireServing(t, l.Addr())
	})

	t.Run("needs a binary and a database", func(t *testing.T) {
		_, err := devcluster.StartLedgerd(ctx, devcluster.LedgerdConfig{Binary: bin})
		require.ErrorContains(t, err, "needs Binary and DatabaseURL")
	})
}
