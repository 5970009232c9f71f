package gotest_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

// consumerMain is the program of TestConsumerModule's consumer: one Do,
// whose outcome it prints.
const consumerMain = `package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
)

func main() {
	client, err := ledgerclient.New(os.Args[1], ledgerclient.WithInsecure())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	result, err := client.Do(ctx, "billing", "invoice-42", func(context.Context) ([]byte, error) {
		return []byte("receipt-42"), nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s replayed=%t version=%s\n", result.Value, result.Replayed, ledgerclient.Version)
}
`

// serverOnlyModules are the server's dependencies that a module requiring
// the client must not get.
var serverOnlyModules = []string{
	"github.com/jackc/pgx",
	"github.com/pressly/goose",
	"github.com/prometheus/",
	"github.com/grpc-ecosystem/grpc-gateway",
}

// TestConsumerModule: a module outside this repository that requires the
// Go client (as its users do, with replace directives standing in for the
// tags) builds offline from the module cache, runs Do against a live
// ledgerd, and has none of the server's dependencies in its module graph.
func TestConsumerModule(t *testing.T) {
	noLeaks(t)
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	clientDir, genDir := filepath.Join(repo, "clients", "go"), filepath.Join(repo, "gen")

	// The client's own module graph in the module cache (a no-op when it
	// is there already, as after any build of the client): the consumer
	// then needs nothing else, and builds with the network off.
	goCommand(t, clientDir, nil, "mod", "download")
	goCommand(t, clientDir, nil, "list", "-m", "all")

	consumer := t.TempDir()
	goMod := "module example.com/pipeline\n\ngo 1.25.0\n\n" +
		"require github.com/ledgerd/ledgerd/clients/go v0.0.0-00010101000000-000000000000\n\n" +
		"replace (\n" +
		"\tgithub.com/ledgerd/ledgerd/clients/go => " + clientDir + "\n" +
		"\tgithub.com/ledgerd/ledgerd/gen => " + genDir + "\n" +
		")\n"
	require.NoError(t, os.WriteFile(filepath.Join(consumer, "go.mod"), []byte(goMod), 0o600))
	// The client's checksums are the consumer's: go.sum lines for the
	// modules it brings, so that nothing is asked of the checksum database.
	sums, err := os.ReadFile(filepath.Join(clientDir, "go.sum"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(consumer, "go.sum"), sums, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(consumer, "main.go"), []byte(consumerMain), 0o600))

	offline := []string{"GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local"}
	program := filepath.Join(consumer, "pipeline")
	goCommand(t, consumer, offline, "build", "-o", program, ".")

	modules := goCommand(t, consumer, offline, "list", "-m", "all")
	for _, line := range strings.Split(modules, "\n") {
		for _, banned := range serverOnlyModules {
			require.NotContains(t, line, banned, "a module that requires the client gets a server dependency; its module graph:\n%s", modules)
		}
	}
	require.Contains(t, modules, "google.golang.org/grpc ", "the graph should name the client's dependencies")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serveTCP(t, ledgertest.Store(t, ledger.Config{}).Store, lis)
	run := func() string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), program, lis.Addr().String()).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return strings.TrimSpace(string(out))
	}
	require.Regexp(t, `^receipt-42 replayed=false version=\d+\.\d+\.\d+`, run())
	require.Regexp(t, `^receipt-42 replayed=true `, run())
}

// goCommand runs the go command in dir with extra environment, and returns
// its standard output; it fails t on an error, with the command's output.
func goCommand(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go %s in %s:\n%s", strings.Join(args, " "), dir, stderr.String())
	return string(out)
}
