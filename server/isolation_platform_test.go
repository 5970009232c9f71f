package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/tlstest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// TestIsolationMetricsNamespaceLabelsCapped: with more namespaces in use
// than the label cap, every series labelled by namespace — whatever its
// metric, so that a new one cannot escape the cap — names at most the cap's
// namespaces, the same ones for all, and counts the rest as "_other".
func TestIsolationMetricsNamespaceLabelsCapped(t *testing.T) {
	t.Parallel()
	const maxLabels, namespaces = 3, 7
	b := ledgertest.Store(t, ledger.Config{})
	metrics := server.NewMetrics(b.Store, server.MetricsConfig{MaxNamespaceLabels: maxLabels})
	addr := ledgertest.ServeTCP(t, b.Store, server.Config{Metrics: metrics})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := ledgerv1.NewLedgerServiceClient(conn)

	// In every namespace: a lease held (the lease gauges, a Reserve
	// outcome), a Reserve over the quota (a quota refusal) and a stale
	// Complete (a stale-token refusal); and a sweep that purged entries.
	ctx := context.Background()
	one := int64(1)
	purged := map[string]int64{}
	for i := range namespaces {
		ns := fmt.Sprintf("tenant-%d", i)
		_, err := b.Store.CreateNamespace(ctx, ns, ledger.NamespaceUpdate{MaxHeldLeases: &one}, "test")
		require.NoError(t, err)
		_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "held", Owner: "w"})
		require.NoError(t, err)
		_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "over", Owner: "w"})
		requireReason(t, err, codes.ResourceExhausted, server.ReasonQuotaExceeded)
		_, err = client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: ns, Key: "held", FencingToken: 99})
		require.Equal(t, codes.Aborted, status.Code(err), "%v", err)
		purged[ns] = 1
	}
	metrics.ObserveSweep(ledger.SweepReport{PurgedEntries: purged})

	families, err := metrics.Registry().Gather()
	require.NoError(t, err)
	labelled := map[string][]string{} // metric name → namespace labels, "_other" included
	for _, family := range families {
		for _, m := range family.GetMetric() {
			for _, label := range m.GetLabel() {
				// _platform (the platform's events, not a namespace's) is
				// always there, at 0 from the start.
				if label.GetName() == "namespace" && label.GetValue() != "_platform" && !slices.Contains(labelled[family.GetName()], label.GetValue()) {
					labelled[family.GetName()] = append(labelled[family.GetName()], label.GetValue())
				}
			}
		}
	}
	for _, name := range []string{"ledgerd_reserve_outcomes_total", "ledgerd_stale_token_refusals_total",
		"ledgerd_quota_refusals_total", "ledgerd_sweeper_purged_entries_total", "ledgerd_leases_held", "ledgerd_leases_expired"} {
		require.Contains(t, labelled, name, "the test drives every series labelled by namespace")
	}
	named := map[string]bool{} // the namespaces with a label of their own, in any series
	for name, values := range labelled {
		require.LessOrEqual(t, len(values), maxLabels+1, "%s: %v", name, values)
		for _, v := range values {
			if v != "_other" {
				named[v] = true
			}
		}
	}
	require.Len(t, named, maxLabels, "one cap for all the series: %v", labelled)

	// What the namespaces beyond the cap did is counted, not dropped.
	require.Contains(t, labelled["ledgerd_leases_held"], "_other")
	held := 0.0
	for _, family := range families {
		if family.GetName() == "ledgerd_leases_held" {
			for _, m := range family.GetMetric() {
				held += m.GetGauge().GetValue()
			}
		}
	}
	require.Equal(t, float64(namespaces), held, "every held lease is in some series")
}

// certPorts is a ledgerd serving both ports over TLS, as cmd/ledgerd runs
// it (the HTTP gateway in-process), with authentication, requiring client
// certificates from ca or the other CAs of its client CA file.
type certPorts struct {
	grpcAddr, httpAddr string
	ca                 *tlstest.CA // signed the server's certificate
	store              *ledger.Store
	auth               *server.Auth
	metrics            *server.Metrics
	log                *ledgertest.LogBuffer
}

// setupCertPorts serves as certPorts says, with cfg's certificate rules;
// the client CA file holds ca and others.
func setupCertPorts(t *testing.T, cfg server.TLSConfig, others ...*tlstest.CA) certPorts {
	t.Helper()
	b := ledgertest.Store(t, ledger.Config{})
	p := certPorts{ca: tlstest.NewCA(t, "test CA"), store: b.Store, log: &ledgertest.LogBuffer{}}
	logger := slog.New(slog.NewJSONHandler(p.log, nil))
	p.metrics = server.NewMetrics(b.Store, server.MetricsConfig{Logger: logger})

	dir := t.TempDir()
	cfg.CertFile, cfg.KeyFile = p.ca.Issue(t, "ledgerd").WriteFiles(t, dir, "server")
	bundle := p.ca.PEM
	for _, other := range others {
		bundle = append(bundle, other.PEM...)
	}
	cfg.ClientCAFile = filepath.Join(dir, "clients.pem")
	require.NoError(t, os.WriteFile(cfg.ClientCAFile, bundle, 0o600))
	cfg.ClientAuth, cfg.Logger, cfg.Metrics = tls.RequireAndVerifyClientCert, logger, p.metrics
	serverTLS, err := server.NewTLS(cfg)
	require.NoError(t, err)

	p.auth = ledgertest.RunAuth(t, b.Store)
	srv, err := server.New(b.Store, server.Config{Logger: logger, Metrics: p.metrics, Auth: p.auth,
		ServerOptions: []grpc.ServerOption{serverTLS.ServerOption()}})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	gatewayCtx, closeGateway := context.WithCancel(context.Background())
	handler, err := srv.HTTPHandler(gatewayCtx, server.HTTPConfig{Logger: logger, Metrics: p.metrics, TLS: serverTLS})
	require.NoError(t, err)
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: serverTLS.HTTPErrorLog(logger)}
	go func() { _ = httpSrv.Serve(tls.NewListener(httpLis, serverTLS.HTTPConfig())) }()
	t.Cleanup(func() {
		_ = httpSrv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(t, <-served)
		closeGateway()
	})
	p.grpcAddr, p.httpAddr = lis.Addr().String(), httpLis.Addr().String()
	return p
}

// grant binds role in namespace ns to principal, at once.
func (p certPorts) grant(t *testing.T, principal string, role ledger.Role, ns string) {
	t.Helper()
	_, err := p.store.GrantRole(context.Background(), ledger.RoleBinding{Principal: principal, NamespacePattern: ns, Role: role}, "test")
	require.NoError(t, err)
	require.NoError(t, p.auth.Load(context.Background()))
}

// presenting is a client configuration that trusts the server and
// presents cert whatever CAs the server asks for (a Go client would
// otherwise send none that the server's CAs did not sign).
func (p certPorts) presenting(cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: p.ca.Pool(), MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
}

// portAnswer is what one port answered: the gRPC code (an HTTP answer's
// is read from its JSON status), and WhoAmI's principal if it succeeded.
type portAnswer struct {
	code      codes.Code
	principal string
}

// grpcCall calls WhoAmI (rpc "WhoAmI") or a Reserve in namespace ns over
// gRPC, presenting cert.
func (p certPorts) grpcCall(t *testing.T, cert tls.Certificate, rpc, ns string) portAnswer {
	t.Helper()
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(p.presenting(cert))))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if rpc == "WhoAmI" {
		who, err := ledgerv1.NewLedgerAdminServiceClient(conn).WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
		return portAnswer{code: status.Code(err), principal: who.GetPrincipal()}
	}
	_, err = ledgerv1.NewLedgerServiceClient(conn).Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: ns, Key: "k-grpc", Owner: "w"})
	return portAnswer{code: status.Code(err)}
}

// httpCall is grpcCall over the HTTPS port's JSON gateway.
func (p certPorts) httpCall(t *testing.T, cert tls.Certificate, rpc, ns string) portAnswer {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: p.presenting(cert)}}
	defer client.CloseIdleConnections()
	path, body := "/ledger.v1.LedgerAdminService/WhoAmI", `{}`
	if rpc != "WhoAmI" {
		path, body = "/ledger.v1.LedgerService/Reserve", fmt.Sprintf(`{"namespace": %q, "key": "k-http", "owner": "w"}`, ns)
	}
	res, err := client.Post("https://"+p.httpAddr+path, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer res.Body.Close()
	var answer map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&answer))
	if res.StatusCode != http.StatusOK {
		return portAnswer{code: codes.Code(answer["code"].(float64))}
	}
	principal, _ := answer["principal"].(string)
	return portAnswer{code: codes.OK, principal: principal}
}

// requireBothPorts checks that gRPC and HTTP answer a call with cert the
// same, as want.
func (p certPorts) requireBothPorts(t *testing.T, cert tls.Certificate, rpc, ns string, want portAnswer) {
	t.Helper()
	require.Equal(t, want, p.grpcCall(t, cert, rpc, ns), "gRPC %s", rpc)
	require.Equal(t, want, p.httpCall(t, cert, rpc, ns), "HTTP %s", rpc)
}

// TestIsolationSPIFFECertificatePrincipal: with the SPIFFE rule, a client
// certificate authenticates as its URI SAN, a SPIFFE ID, on both ports
// alike, and is authorized by the bindings of that principal only — not by
// those of its common name's "cert:" principal; a certificate without
// exactly one valid SPIFFE ID is not a principal (UNAUTHENTICATED).
func TestIsolationSPIFFECertificatePrincipal(t *testing.T) {
	t.Parallel()
	p := setupCertPorts(t, server.TLSConfig{ClientPrincipal: server.PrincipalSPIFFEID})
	const worker = "spiffe://example.org/payments/worker"
	p.grant(t, worker, ledger.RoleWorker, "payments")
	p.grant(t, "cert:alice", ledger.RoleWorker, "payments")

	svid := p.ca.IssueWithURIs(t, "payments-worker", worker).TLSCertificate(t)
	p.requireBothPorts(t, svid, "WhoAmI", "", portAnswer{code: codes.OK, principal: worker})
	p.requireBothPorts(t, svid, "Reserve", "payments", portAnswer{code: codes.OK})
	p.requireBothPorts(t, svid, "Reserve", "billing", portAnswer{code: codes.PermissionDenied})

	// Alice's common name is bound, but under this rule her certificate is
	// its SPIFFE ID, which is not.
	alice := p.ca.IssueWithURIs(t, "alice", "spiffe://example.org/alice").TLSCertificate(t)
	p.requireBothPorts(t, alice, "WhoAmI", "", portAnswer{code: codes.OK, principal: "spiffe://example.org/alice"})
	p.requireBothPorts(t, alice, "Reserve", "payments", portAnswer{code: codes.PermissionDenied})

	for name, uris := range map[string][]string{
		"no URI SAN":            nil,
		"two URI SANs":          {worker, "spiffe://example.org/other"},
		"not spiffe":            {"https://example.org/payments/worker"},
		"no path":               {"spiffe://example.org"},
		"upper-case domain":     {"spiffe://Example.org/payments/worker"},
		"a query":               {worker + "?role=admin"},
		"a dot-dot segment":     {"spiffe://example.org/payments/../admin"},
		"a port in the domain":  {"spiffe://example.org:443/payments/worker"},
		"an empty path segment": {"spiffe://example.org/payments//worker"},
	} {
		t.Run(name, func(t *testing.T) {
			cert := p.ca.IssueWithURIs(t, "payments-worker", uris...).TLSCertificate(t)
			p.requireBothPorts(t, cert, "WhoAmI", "", portAnswer{code: codes.Unauthenticated})
			p.requireBothPorts(t, cert, "Reserve", "payments", portAnswer{code: codes.Unauthenticated})
		})
	}
}

// TestCommonNameRuleIgnoresURIs: under the default rule, a
// certificate that also carries a SPIFFE ID is still "cert:<CN>": one
// certificate, one principal, whatever else it names.
func TestCommonNameRuleIgnoresURIs(t *testing.T) {
	t.Parallel()
	p := setupCertPorts(t, server.TLSConfig{})
	cert := p.ca.IssueWithURIs(t, "alice", "spiffe://example.org/alice").TLSCertificate(t)
	p.requireBothPorts(t, cert, "WhoAmI", "", portAnswer{code: codes.OK, principal: "cert:alice"})
}

// TestIsolationPinnedCertificateIssuer: with the issuers pinned, a
// certificate that verifies against another CA of the client CA file
// completes the handshake but is not a principal (UNAUTHENTICATED) on
// either port, whatever bindings its name has; the pinned CA's
// certificates are.
func TestIsolationPinnedCertificateIssuer(t *testing.T) {
	t.Parallel()
	pinned, other := tlstest.NewCA(t, "tenant CA"), tlstest.NewCA(t, "partner CA")
	p := setupCertPorts(t, server.TLSConfig{ClientIssuerSPKIs: [][sha256.Size]byte{sha256.Sum256(pinned.Cert.RawSubjectPublicKeyInfo)}},
		pinned, other)
	p.grant(t, "cert:alice", ledger.RoleWorker, "payments")

	p.requireBothPorts(t, pinned.Issue(t, "alice").TLSCertificate(t), "WhoAmI", "", portAnswer{code: codes.OK, principal: "cert:alice"})
	p.requireBothPorts(t, pinned.Issue(t, "alice").TLSCertificate(t), "Reserve", "payments", portAnswer{code: codes.OK})
	forged := other.Issue(t, "alice").TLSCertificate(t)
	p.requireBothPorts(t, forged, "WhoAmI", "", portAnswer{code: codes.Unauthenticated})
	p.requireBothPorts(t, forged, "Reserve", "payments", portAnswer{code: codes.Unauthenticated})
	// The server's own CA is in the file too, and not pinned either.
	p.requireBothPorts(t, p.ca.Issue(t, "alice").TLSCertificate(t), "WhoAmI", "", portAnswer{code: codes.Unauthenticated})
}

// TestIsolationFailedHandshakeLogged: a handshake that fails for its client
// certificate is logged at WARN with the source address and the reason,
// once per source however many follow, and every one is counted in
// ledgerd_tls_handshake_failures_total, on either port.
func TestIsolationFailedHandshakeLogged(t *testing.T) {
	t.Parallel()
	for _, port := range []string{"grpc", "http"} {
		t.Run(port, func(t *testing.T) {
			t.Parallel()
			p := setupCertPorts(t, server.TLSConfig{})
			stranger := tlstest.NewCA(t, "stranger CA").Issue(t, "mallory").TLSCertificate(t)
			attempt := func() {
				if port == "grpc" {
					require.Equal(t, codes.Unavailable, p.grpcCall(t, stranger, "WhoAmI", "").code)
					return
				}
				client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: p.presenting(stranger)}}
				res, err := client.Get("https://" + p.httpAddr + "/healthz")
				if err == nil {
					_ = res.Body.Close()
				}
				require.Error(t, err)
			}
			failures := func() float64 {
				return counterValue(t, p.metrics, "ledgerd_tls_handshake_failures_total",
					map[string]string{"port": port, "reason": "untrusted_client_certificate"})
			}
			for n := 1; n <= 3; n++ {
				attempt()
				require.Eventually(t, func() bool { return failures() >= float64(n) }, time.Minute, 10*time.Millisecond,
					"failure %d counted; log: %s", n, p.log)
			}
			require.GreaterOrEqual(t, failures(), 3.0)
			var lines []map[string]any
			for _, line := range strings.Split(p.log.String(), "\n") {
				if strings.Contains(line, "TLS handshake failed") {
					var entry map[string]any
					require.NoError(t, json.Unmarshal([]byte(line), &entry))
					lines = append(lines, entry)
				}
			}
			require.Len(t, lines, 1, "once per source: %s", p.log)
			require.Equal(t, "WARN", lines[0]["level"])
			require.Equal(t, port, lines[0]["port"])
			require.Equal(t, "untrusted_client_certificate", lines[0]["reason"])
			require.Contains(t, lines[0]["source"], "127.0.0.1:")
			require.Contains(t, lines[0]["error"], "certificate signed by unknown authority")
		})
	}
}

// counterValue returns the value of the counter name with labels, 0 if it
// has no such series yet.
func counterValue(t *testing.T, metrics *server.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry().Gather()
	require.NoError(t, err)
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
	series:
		for _, m := range family.GetMetric() {
			for _, label := range m.GetLabel() {
				if want, ok := labels[label.GetName()]; ok && want != label.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
