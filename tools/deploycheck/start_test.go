package deploycheck

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// checkStarts runs `ledgerd serve` with a set of settings and checks that
// it accepts every value and binds its ports: it logs "ledgerd listening",
// then waits for a database that is not there, and stops on SIGTERM. It
// runs once with the settings as LEDGER_* variables and, when configFile is
// given and ledgerd knows --config (the arguments' check fails otherwise),
// once more with the file itself, as the chart and the unit pass it. The
// addresses become 127.0.0.1:0 (the render's ports are checked against the
// container's elsewhere), and the TLS files are made up here: variables
// override the file's.
func checkStarts(t *testing.T, serve flagSet, settings map[string]string, configFile string) {
	t.Helper()
	overrides := map[string]string{}
	var certs map[string]string
	for name := range settings {
		switch name {
		case "listen-addr", "http-addr", "metrics-listen-addr":
			overrides[name] = "127.0.0.1:0"
		case "tls-cert-file", "tls-key-file", "tls-client-ca-file":
			if certs == nil {
				certs = writeCerts(t)
			}
			overrides[name] = certs[name]
		}
	}
	all := maps.Clone(settings)
	maps.Copy(all, overrides)
	runServe(t, "the settings as LEDGER_* variables", nil, all)
	if configFile != "" && serve.known("config") {
		file := filepath.Join(t.TempDir(), "ledgerd.yaml")
		if err := os.WriteFile(file, []byte(configFile), 0o600); err != nil {
			t.Fatal(err)
		}
		runServe(t, "--config", []string{"--config=" + file}, overrides)
	}
}

// runServe runs `ledgerd serve` with the given flags and settings (as
// LEDGER_* variables) until it listens, then stops it.
func runServe(t *testing.T, what string, flags []string, settings map[string]string) {
	t.Helper()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		// Nothing listens on port 1: ledgerd keeps retrying, NOT_SERVING.
		"LEDGER_DATABASE_URL=postgres://ledgerd@127.0.0.1:1/ledger?connect_timeout=1",
	}
	for name, value := range settings {
		env = append(env, "LEDGER_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+"="+value)
	}
	var out lockedBuffer
	cmd := exec.Command(ledgerd, append([]string{"serve"}, flags...)...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(out.String(), "ledgerd listening") {
		select {
		case err := <-exited:
			t.Fatalf("ledgerd serve with %s exited (%v) before listening:\n%s", what, err, out.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("ledgerd serve with %s did not listen within 30s:\n%s", what, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("ledgerd serve with %s exited with %v after SIGTERM:\n%s", what, err, out.String())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Errorf("ledgerd serve with %s did not stop within a minute of SIGTERM:\n%s", what, out.String())
	}
}

// writeCerts writes a self-signed server certificate, its key and a client
// CA (the same certificate) to the test's directory, by setting name.
func writeCerts(t *testing.T) map[string]string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ledgerd"}, DNSNames: []string{"ledgerd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"tls-cert-file":      filepath.Join(dir, "tls.crt"),
		"tls-key-file":       filepath.Join(dir, "tls.key"),
		"tls-client-ca-file": filepath.Join(dir, "ca.crt"),
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for name, data := range map[string][]byte{
		"tls-cert-file": cert, "tls-client-ca-file": cert,
		"tls-key-file": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(files[name], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files
}
