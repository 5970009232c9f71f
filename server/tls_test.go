package server_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/tlstest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// tlsBundle is a ledgerd serving gRPC over TLS on a loopback port, from
// certificate files in a directory of the test, with authentication.
type tlsBundle struct {
	addr                      string
	ca                        *tlstest.CA // signed the server's and the clients' certificates
	certFile, keyFile, caFile string
	token                     string // of the principal "svc", a worker in "ns"
	log                       *ledgertest.LogBuffer
}

func setupTLS(t *testing.T, clientAuth tls.ClientAuthType) tlsBundle {
	t.Helper()
	b := ledgertest.Store(t, ledger.Config{})
	ctx := context.Background()
	for _, principal := range []string{"cert:alice", "svc"} {
		_, err := b.Store.GrantRole(ctx, ledger.RoleBinding{Principal: principal, NamespacePattern: "ns", Role: ledger.RoleWorker}, "test")
		require.NoError(t, err)
	}
	_, token, err := b.Store.CreateToken(ctx, "svc", "test", 0, "test")
	require.NoError(t, err)
	auth := server.NewAuth(b.Store, server.AuthConfig{})
	require.NoError(t, auth.Load(ctx))

	tb := tlsBundle{ca: tlstest.NewCA(t, "test CA"), token: token, log: &ledgertest.LogBuffer{}}
	dir := t.TempDir()
	tb.certFile, tb.keyFile = tb.ca.Issue(t, "ledgerd").WriteFiles(t, dir, "server")
	tb.caFile = filepath.Join(dir, "clients.pem")
	tlstest.WriteFile(t, tb.caFile, tb.ca.PEM)
	logger := slog.New(slog.NewJSONHandler(tb.log, nil))
	serverTLS, err := server.NewTLS(server.TLSConfig{
		CertFile: tb.certFile, KeyFile: tb.keyFile, ClientCAFile: tb.caFile, ClientAuth: clientAuth, Logger: logger,
	})
	require.NoError(t, err)
	tb.addr = ledgertest.ServeTCP(t, b.Store, server.Config{Logger: logger, Auth: auth, ServerOptions: []grpc.ServerOption{serverTLS.ServerOption()}})
	return tb
}

// dial connects over TLS, trusting the test CA, with the client
// certificates given.
func (b tlsBundle) dial(t *testing.T, certs ...tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: b.ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12,
	})))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// serverSerial returns the serial number of the certificate that a new
// connection with the client certificate gets from the server.
func (b tlsBundle) serverSerial(t *testing.T, client tls.Certificate) *big.Int {
	t.Helper()
	conn := b.dial(t, client)
	defer conn.Close()
	var p peer.Peer
	_, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	require.NoError(t, err)
	return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber
}

// TestClientCertificates: a verified client certificate authenticates as
// "cert:<CN>" and is authorized by that principal's role bindings; a
// bearer token wins over it; a certificate from another CA, or none when
// one is required, fails the handshake.
func TestClientCertificates(t *testing.T) {
	t.Parallel()
	b := setupTLS(t, tls.RequireAndVerifyClientCert)
	alice := b.ca.Issue(t, "alice").TLSCertificate(t)
	cases := []struct {
		name      string
		certs     []tls.Certificate
		token     string
		principal string     // WhoAmI's answer, if it succeeds
		reserve   codes.Code // of a Reserve in "ns"
	}{
		{"certificate from the CA", []tls.Certificate{alice}, "", "cert:alice", codes.OK},
		{"a token wins over the certificate", []tls.Certificate{alice}, b.token, "svc", codes.OK},
		{"certificate without roles", []tls.Certificate{b.ca.Issue(t, "bob").TLSCertificate(t)}, "", "cert:bob", codes.PermissionDenied},
		{"certificate without a common name", []tls.Certificate{b.ca.Issue(t, "").TLSCertificate(t)}, "", "", codes.Unauthenticated},
		{"certificate from another CA", []tls.Certificate{tlstest.NewCA(t, "other CA").Issue(t, "alice").TLSCertificate(t)}, "", "", codes.Unavailable},
		{"no certificate", nil, b.token, "", codes.Unavailable},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := b.dial(t, tc.certs...)
			ctx := as(context.Background(), tc.token)
			who, err := ledgerv1.NewLedgerAdminServiceClient(conn).WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
			if tc.principal != "" {
				require.NoError(t, err)
				require.Equal(t, tc.principal, who.GetPrincipal())
			}
			_, err = ledgerv1.NewLedgerServiceClient(conn).Reserve(ctx, &ledgerv1.ReserveRequest{
				Namespace: "ns", Key: "k" + string(rune('a'+i)), Owner: "w"})
			require.Equal(t, tc.reserve, status.Code(err), "%v", err)
		})
	}
}

// TestOptionalClientCertificates: with certificates requested, not
// required, a caller without one authenticates with a token.
func TestOptionalClientCertificates(t *testing.T) {
	t.Parallel()
	b := setupTLS(t, tls.VerifyClientCertIfGiven)
	admin := ledgerv1.NewLedgerAdminServiceClient(b.dial(t))
	who, err := admin.WhoAmI(as(context.Background(), b.token), &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "svc", who.GetPrincipal())
	_, err = admin.WhoAmI(context.Background(), &ledgerv1.WhoAmIRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	admin = ledgerv1.NewLedgerAdminServiceClient(b.dial(t, b.ca.Issue(t, "alice").TLSCertificate(t)))
	who, err = admin.WhoAmI(context.Background(), &ledgerv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "cert:alice", who.GetPrincipal())
}

// TestCertificateRotation: new certificate files are picked up by new
// connections without a restart; files that do not load are ignored (the
// last good certificate stays); a new client CA is picked up too.
func TestCertificateRotation(t *testing.T) {
	t.Parallel()
	b := setupTLS(t, tls.RequireAndVerifyClientCert)
	alice := b.ca.Issue(t, "alice").TLSCertificate(t)
	first, err := tls.LoadX509KeyPair(b.certFile, b.keyFile)
	require.NoError(t, err)
	require.Equal(t, first.Leaf.SerialNumber, b.serverSerial(t, alice))

	// Halfway through a rotation: the new certificate, the old key.
	rotated := b.ca.Issue(t, "ledgerd")
	tlstest.WriteFile(t, b.certFile, rotated.CertPEM)
	require.Eventually(t, func() bool {
		// Handshakes check the files.
		require.Equal(t, first.Leaf.SerialNumber, b.serverSerial(t, alice), "the last good certificate is kept")
		return strings.Contains(b.log.String(), "TLS files changed but cannot be loaded")
	}, time.Minute, 50*time.Millisecond, "the mismatched pair is noticed")

	tlstest.WriteFile(t, b.keyFile, rotated.KeyPEM)
	require.Eventually(t, func() bool {
		return b.serverSerial(t, alice).Cmp(rotated.Cert.SerialNumber) == 0
	}, time.Minute, 50*time.Millisecond, "new connections get the new certificate")
	require.Contains(t, b.log.String(), "TLS certificate reloaded")

	// A new client CA: its clients are let in, the old CA's are not.
	other := tlstest.NewCA(t, "next CA")
	tlstest.WriteFile(t, b.caFile, other.PEM)
	carol := other.Issue(t, "carol").TLSCertificate(t)
	require.Eventually(t, func() bool {
		_, err := healthpb.NewHealthClient(b.dial(t, carol)).Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil
	}, time.Minute, 50*time.Millisecond)
	_, err = healthpb.NewHealthClient(b.dial(t, alice)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err))
}

func TestNewTLSRefusesBadConfigurations(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "ledgerd").WriteFiles(t, dir, "server")
	otherKey := filepath.Join(dir, "other.key")
	tlstest.WriteFile(t, otherKey, ca.Issue(t, "other").KeyPEM)
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	for _, tc := range []struct {
		cfg  server.TLSConfig
		want string
	}{
		{server.TLSConfig{CertFile: certFile}, "need both"},
		{server.TLSConfig{CertFile: certFile, KeyFile: otherKey}, "private key does not match"},
		{server.TLSConfig{CertFile: certFile, KeyFile: filepath.Join(dir, "missing.key")}, "missing.key"},
		{server.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientAuth: tls.RequireAndVerifyClientCert}, "needs a client CA file"},
		{server.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: notPEM}, "not asked for"},
		{server.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: notPEM, ClientAuth: tls.RequireAndVerifyClientCert}, "no PEM certificate"},
		{server.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientAuth: tls.RequestClientCert}, "not supported"},
		{server.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientPrincipal: "uri"}, `client principal rule "uri" is not one`},
		{server.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientIssuerSPKIs: [][32]byte{{1}}}, "pinned client certificate issuers are given, but client certificates are not asked for"},
	} {
		_, err := server.NewTLS(tc.cfg)
		require.ErrorContains(t, err, tc.want, "%+v", tc.cfg)
	}
	_, err := server.NewTLS(server.TLSConfig{CertFile: certFile, KeyFile: keyFile})
	require.NoError(t, err)
}
