// Package image_test tests ledgerd's container image (Containerfile in this
// directory), which `make image-test` builds, mounts and hands over.
//
// Containers cannot run on every machine (crun refuses a host whose cgroups
// are in hybrid mode), so the test runs the image's entrypoint from the
// mounted image with chroot, as the image's user, with the image's
// environment and nothing else: the same files and the same read-only root
// a container would have, without the runtime's namespaces.
package image_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// The variables `make image-test` (scripts/image-test.sh) sets.
const (
	envImage     = "LEDGER_TEST_IMAGE"      // the image's name
	envRoot      = "LEDGER_TEST_IMAGE_ROOT" // where it is mounted (podman image mount)
	envVersion   = "LEDGER_TEST_IMAGE_VERSION"
	envCommit    = "LEDGER_TEST_IMAGE_COMMIT"
	envBuildDate = "LEDGER_TEST_IMAGE_BUILD_DATE"
)

// nonRoot is the image's user and group.
const nonRoot = "65532:65532"

// imageConfig is what the test reads of `podman image inspect`.
//
//nolint:tagliatelle // the names are podman's, not ours
type imageConfig struct {
	Os     string `json:"Os"`
	Config struct {
		User         string              `json:"User"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		WorkingDir   string              `json:"WorkingDir"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Labels       map[string]string   `json:"Labels"`
	} `json:"Config"`
}

// stamp is what `make image` stamped into the binary and the labels.
type stamp struct{ version, commit, buildDate string }

func TestImage(t *testing.T) {
	image, root := os.Getenv(envImage), os.Getenv(envRoot)
	if image == "" || root == "" {
		t.Skipf("%s and %s are not set: `make image-test` builds the image, mounts it and runs this test", envImage, envRoot)
	}
	want := stamp{version: os.Getenv(envVersion), commit: os.Getenv(envCommit), buildDate: os.Getenv(envBuildDate)}
	require.NotEmpty(t, want.version, envVersion)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := inspect(ctx, t, image)

	t.Run("config", func(t *testing.T) {
		require.Equal(t, "linux", cfg.Os)
		require.Equal(t, nonRoot, cfg.Config.User, "a numeric non-root user, which runAsNonRoot can check")
		require.Equal(t, []string{"/ledgerd"}, cfg.Config.Entrypoint)
		require.Equal(t, []string{"serve"}, cfg.Config.Cmd)
		require.Contains(t, []string{"", "/"}, cfg.Config.WorkingDir)
		require.Contains(t, cfg.Config.ExposedPorts, "7070/tcp")
		require.Contains(t, cfg.Config.ExposedPorts, "7071/tcp")
		require.Contains(t, cfg.Config.Env, "LEDGER_LISTEN_ADDR=:7070")
		require.Contains(t, cfg.Config.Env, "LEDGER_HTTP_ADDR=:7071")
		labels := cfg.Config.Labels
		require.Equal(t, want.version, labels["org.opencontainers.image.version"])
		require.Equal(t, want.buildDate, labels["org.opencontainers.image.created"])
		if want.commit != "" {
			require.Equal(t, want.commit, labels["org.opencontainers.image.revision"])
		}
		require.Equal(t, "github.com/ledgerd/ledgerd", labels["org.opencontainers.image.source"])
		require.Equal(t, "ledgerd", labels["org.opencontainers.image.title"])
	})

	t.Run("files", func(t *testing.T) {
		// Only ledgerd and the CA bundle: no shell, no /etc/passwd.
		var files []string
		require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(root, path)
			files = append(files, rel)
			return err
		}))
		require.ElementsMatch(t, []string{"ledgerd", "etc/ssl/certs/ca-certificates.crt"}, files)

		for _, file := range []struct {
			path string
			mode fs.FileMode
		}{{"ledgerd", 0o555}, {"etc/ssl/certs/ca-certificates.crt", 0o444}} {
			info, err := os.Stat(filepath.Join(root, file.path))
			require.NoError(t, err)
			require.Equal(t, file.mode, info.Mode().Perm(), "%s: root's, read-only for the user", file.path)
			owner := info.Sys().(*syscall.Stat_t)
			require.Equal(t, [2]uint32{0, 0}, [2]uint32{owner.Uid, owner.Gid}, "%s is root's", file.path)
		}

		// Static: no program interpreter, no shared library (scratch has
		// neither).
		binary, err := elf.Open(filepath.Join(root, "ledgerd"))
		require.NoError(t, err)
		defer func() { _ = binary.Close() }()
		for _, prog := range binary.Progs {
			require.NotEqual(t, elf.PT_INTERP, prog.Type, "ledgerd is dynamically linked")
		}
		libraries, err := binary.ImportedLibraries()
		require.NoError(t, err)
		require.Empty(t, libraries)

		bundle, err := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
		require.NoError(t, err)
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(bundle), "the CA bundle holds no certificate")
		require.Greater(t, bytes.Count(bundle, []byte("-----BEGIN CERTIFICATE-----")), 50, "a whole CA bundle")
	})

	t.Run("version", func(t *testing.T) {
		for _, arg := range []string{"version", "--version"} {
			argv := append(inImage(root, cfg), arg)
			out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
			require.NoError(t, err, "%s", out)
			lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			require.Len(t, lines, 4, "%s", out)
			require.Equal(t, "ledgerd "+want.version, lines[0])
			if want.commit != "" {
				require.Equal(t, "commit:     "+want.commit, lines[1])
			}
			require.Equal(t, "built:      "+want.buildDate, lines[2])
		}
	})

	t.Run("serve", func(t *testing.T) {
		testServe(ctx, t, root, cfg, want)
	})
}

// testServe runs the image's `ledgerd serve` over a throwaway PostgreSQL
// and checks that it migrates, answers a Reserve, reports ready, exports
// the stamped build on /metrics, and stops cleanly on SIGTERM.
func testServe(ctx context.Context, t *testing.T, root string, cfg imageConfig, want stamp) {
	t.Helper()
	pg, err := devcluster.StartPostgres(ctx, devcluster.PostgresConfig{Durability: devcluster.Throwaway})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pg.Destroy()) })

	// devcluster starts "BINARY serve --listen-addr ADDR ARGS...": BINARY
	// is a script that runs the image's entrypoint with them instead.
	// It passes on LEDGER_DATABASE_URL, which devcluster sets, and nothing
	// else of its environment.
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "ledgerd-in-image")
	argv := inImage(root, cfg, `LEDGER_DATABASE_URL="$LEDGER_DATABASE_URL"`)
	for i, arg := range argv {
		if !strings.HasPrefix(arg, "LEDGER_DATABASE_URL=") {
			argv[i] = shellQuote(arg)
		}
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s \"$@\"\n", strings.Join(argv, " "))
	require.NoError(t, os.WriteFile(wrapper, []byte(script), 0o755))

	httpAddr := freeAddr(t)
	ledgerd, err := devcluster.StartLedgerd(ctx, devcluster.LedgerdConfig{
		Binary:      wrapper,
		DatabaseURL: pg.URL(),
		// The image listens on every interface (LEDGER_LISTEN_ADDR); the
		// flags, which win, keep the test on loopback, as --insecure-dev
		// wants.
		Args:    []string{"--insecure-dev", "--http-addr", httpAddr},
		LogPath: filepath.Join(dir, "ledgerd.log"),
		Name:    "ledgerd (image)",
	})
	require.NoError(t, err)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = ledgerd.Stop()
		}
	})

	client, err := ledgerclient.New(ledgerd.Addr(), ledgerclient.WithInsecure())
	require.NoError(t, err)
	defer func() { _ = client.Close() }()
	reserved, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "image", Key: "k1", Owner: "w1"})
	require.NoError(t, err)
	require.NotNil(t, reserved.GetAcquired(), "%v", reserved)
	require.Equal(t, int64(1), reserved.GetAcquired().GetFencingToken())

	code, _ := get(ctx, t, "http://"+httpAddr+"/readyz")
	require.Equal(t, http.StatusOK, code)
	code, metrics := get(ctx, t, "http://"+httpAddr+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Regexp(t, fmt.Sprintf(`(?m)^ledgerd_build_info\{build_date=%q,commit="[^"]*",go_version="go[^"]+",version=%q\} 1$`,
		want.buildDate, want.version), metrics)

	stopped = true
	require.NoError(t, ledgerd.Stop(), "ledgerd did not stop cleanly:\n%s", ledgerd.LogTail(20))
	log, err := os.ReadFile(ledgerd.LogPath())
	require.NoError(t, err)
	require.Contains(t, string(log), "ledgerd serving")
	require.Contains(t, string(log), "stopped")
}

// inImage returns the command line that runs the image's entrypoint as a
// container would: from the image's root (mounted at root, read-only), as
// its user, in / (the image sets no working directory), with the image's
// environment and env, and nothing of this process's. The arguments follow.
func inImage(root string, cfg imageConfig, env ...string) []string {
	chroot, err := exec.LookPath("chroot")
	if err != nil {
		chroot = "/usr/sbin/chroot"
	}
	argv := []string{"/usr/bin/env", "-i"}
	argv = append(argv, cfg.Config.Env...)
	argv = append(argv, env...)
	argv = append(argv, chroot, "--userspec="+cfg.Config.User, "--groups=", root)
	return append(argv, cfg.Config.Entrypoint...)
}

// inspect returns the image's configuration.
func inspect(ctx context.Context, t *testing.T, image string) imageConfig {
	t.Helper()
	out, err := exec.CommandContext(ctx, "podman", "image", "inspect", image).Output()
	require.NoError(t, err, "podman image inspect %s", image)
	var configs []imageConfig
	require.NoError(t, json.Unmarshal(out, &configs))
	require.Len(t, configs, 1)
	return configs[0]
}

// get returns the status and body of a GET of url.
func get(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// freeAddr returns a free port of 127.0.0.1, host:port.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
