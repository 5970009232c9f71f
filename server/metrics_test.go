package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/tlstest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// gaugeValues returns the values of the gauge name by the value of its
// label (or "" for a gauge without labels); empty if it has no series.
func gaugeValues(t *testing.T, metrics *server.Metrics, name, label string) map[string]float64 {
	t.Helper()
	families, err := metrics.Registry().Gather()
	require.NoError(t, err)
	values := map[string]float64{}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, m := range family.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					key = l.GetValue()
				}
			}
			values[key] = m.GetGauge().GetValue()
		}
	}
	return values
}

// TestMetricsErrorsByReason: every failed call is counted by its ErrorInfo
// reason, the refusals of the interceptors in front of the handlers
// (authentication, rate limits) included, and every reason starts at 0.
func TestMetricsErrorsByReason(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	metrics := server.NewMetrics(b.ledger.Store, server.MetricsConfig{})
	errorsOf := func(reason string) float64 {
		return counterValue(t, metrics, "ledgerd_rpc_errors_total", map[string]string{"reason": reason})
	}
	for _, reason := range []string{"LEASE_LOST", "RATE_LIMITED", "UNAUTHENTICATED", "PERMISSION_DENIED", "_other"} {
		require.Contains(t, errorReasonLabels(t, metrics), reason, "the reason %s starts at 0", reason)
	}

	srv, err := server.New(b.ledger.Store, server.Config{
		Logger:     slog.New(slog.DiscardHandler),
		Auth:       b.auth,
		Metrics:    metrics,
		RateLimits: server.RateLimits{PerPrincipal: server.Rate{PerSecond: 0.001, Burst: 2}},
	})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Shutdown(context.Background()); require.NoError(t, <-served) }()
	client := ledgerv1.NewLedgerServiceClient(ledgertest.Dial(t, lis))
	ctx := as(context.Background(), b.tokens["worker"])

	_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	_, err = client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: 99})
	require.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	_, err = client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "over the burst of 2: %v", err)
	// A call without any credentials is refused before its request is read
	// (see server.Limits), ahead of every interceptor; one with
	// a bad token reaches authentication.
	_, err = client.Lookup(as(context.Background(), "not-a-token"), &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)

	require.Equal(t, 1.0, errorsOf("LEASE_LOST"))
	require.Equal(t, 1.0, errorsOf("RATE_LIMITED"))
	require.Equal(t, 1.0, errorsOf("UNAUTHENTICATED"))
	require.Equal(t, 0.0, errorsOf("PERMISSION_DENIED"))
	require.Equal(t, 1.0, counterValue(t, metrics, "ledgerd_reserve_outcomes_total", map[string]string{"namespace": "ns", "outcome": "acquired"}))
}

// errorReasonLabels returns the reason label values that
// ledgerd_rpc_errors_total has series for.
func errorReasonLabels(t *testing.T, metrics *server.Metrics) []string {
	t.Helper()
	families, err := metrics.Registry().Gather()
	require.NoError(t, err)
	var reasons []string
	for _, family := range families {
		if family.GetName() == "ledgerd_rpc_errors_total" {
			for _, m := range family.GetMetric() {
				reasons = append(reasons, m.GetLabel()[0].GetValue())
			}
		}
	}
	return reasons
}

// TestMetricsReadiness: ledgerd_ready is 1 while the server is ready, and 0
// once it turns lame duck, as /readyz does.
func TestMetricsReadiness(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{})
	metrics := server.NewMetrics(b.Store, server.MetricsConfig{})
	require.Empty(t, gaugeValues(t, metrics, "ledgerd_ready", ""), "no server yet")
	srv, err := server.New(b.Store, server.Config{Logger: slog.New(slog.DiscardHandler), Metrics: metrics})
	require.NoError(t, err)
	defer srv.Shutdown(context.Background())
	require.Equal(t, map[string]float64{"": 1}, gaugeValues(t, metrics, "ledgerd_ready", ""))
	srv.LameDuck()
	require.Equal(t, map[string]float64{"": 0}, gaugeValues(t, metrics, "ledgerd_ready", ""))
}

// TestMetricsCertificateExpiry: the expiry of the served certificate is
// exported for both ports, and follows a rotation of the files at the next
// scrape, without any handshake in between.
func TestMetricsCertificateExpiry(t *testing.T) {
	t.Parallel()
	b := ledgertest.Store(t, ledger.Config{})
	metrics := server.NewMetrics(b.Store, server.MetricsConfig{})
	require.Empty(t, gaugeValues(t, metrics, "ledgerd_tls_certificate_expiry_timestamp_seconds", "port"), "no TLS")

	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	first := ca.Issue(t, "ledgerd")
	certFile, keyFile := first.WriteFiles(t, dir, "server")
	_, err := server.NewTLS(server.TLSConfig{CertFile: certFile, KeyFile: keyFile, Metrics: metrics,
		ReloadCheckInterval: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	expiry := float64(first.Cert.NotAfter.Unix())
	require.Equal(t, map[string]float64{"grpc": expiry, "http": expiry},
		gaugeValues(t, metrics, "ledgerd_tls_certificate_expiry_timestamp_seconds", "port"))
	for _, reason := range []string{"no_client_certificate", "untrusted_client_certificate", "other"} {
		require.Equal(t, 0.0, counterValue(t, metrics, "ledgerd_tls_handshake_failures_total", map[string]string{"port": "http", "reason": reason}))
	}

	notAfter := first.Cert.NotAfter.Add(30 * 24 * time.Hour).Truncate(time.Second)
	certPEM, keyPEM := selfSigned(t, notAfter)
	tlstest.WriteFile(t, keyFile, keyPEM)
	tlstest.WriteFile(t, certFile, certPEM)
	require.Eventually(t, func() bool {
		values := gaugeValues(t, metrics, "ledgerd_tls_certificate_expiry_timestamp_seconds", "port")
		return values["grpc"] == float64(notAfter.Unix()) && values["http"] == float64(notAfter.Unix())
	}, time.Minute, 10*time.Millisecond, "the rotated certificate's expiry")
}

// selfSigned returns a certificate and key, in PEM, that expire at notAfter.
func selfSigned(t *testing.T, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "ledgerd"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	_, err = tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return certPEM, keyPEM
}
