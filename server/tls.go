package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// TLSConfig configures TLS on ledgerd's ports (see NewTLS). Zero fields
// take their defaults.
type TLSConfig struct {
	// CertFile and KeyFile are the PEM files of the server's certificate
	// (with its intermediates) and private key. Required.
	CertFile, KeyFile string
	// ClientCAFile is a PEM file of the CAs that client certificates are
	// verified against. Required when ClientAuth asks for certificates.
	ClientCAFile string
	// ClientAuth is tls.NoClientCert, tls.VerifyClientCertIfGiven or
	// tls.RequireAndVerifyClientCert. Defaults to tls.NoClientCert.
	ClientAuth tls.ClientAuthType
	// ClientPrincipal is the rule that names a verified client
	// certificate's principal, on both ports. Defaults to
	// PrincipalCommonName ("cert:<CN>").
	ClientPrincipal CertificatePrincipal
	// ClientIssuerSPKIs pins the issuers of certificate principals: the
	// SHA-256 digests of the SubjectPublicKeyInfo of the CAs (roots or
	// intermediates) whose certificates are principals. A certificate that
	// verifies against another CA of ClientCAFile completes the handshake
	// but is not a principal (UNAUTHENTICATED, unless the call carries a
	// token). Empty (the default): every CA of ClientCAFile issues
	// principals.
	ClientIssuerSPKIs [][sha256.Size]byte
	// Metrics counts the failed handshakes
	// (ledgerd_tls_handshake_failures_total) and exports the served
	// certificate's expiry
	// (ledgerd_tls_certificate_expiry_timestamp_seconds). Defaults to nil:
	// neither.
	Metrics *Metrics
	// ReloadCheckInterval is how often, at most, a handshake checks whether
	// the files changed on disk (their modification time or size). Defaults
	// to 1s.
	ReloadCheckInterval time.Duration
	// Logger reports reloads, files that could not be reloaded, and failed
	// handshakes (see HTTPErrorLog). Defaults to slog.Default().
	Logger *slog.Logger
}

// TLS serves ledgerd's ports over TLS from certificate files that it reads
// again when they change: a rotated certificate (or client CA) is used by
// the next handshake, without a restart. If the new files cannot be read or
// do not match, the last good certificate stays in use and a warning is
// logged. A verified client certificate authenticates as the principal that
// TLSConfig.ClientPrincipal names ("cert:<CN>" by default; see Auth),
// provided that TLSConfig.ClientIssuerSPKIs, if any, pin its issuer. The
// handshakes that fail are logged and counted (see HTTPErrorLog).
type TLS struct {
	cfg        TLSConfig
	rules      certificateRules
	handshakes *handshakeLog

	mu      sync.Mutex
	checked time.Time    // when the files were last looked at
	stamps  [3]fileStamp // of the certificate, key and client CA files
	current *tls.Config  // the last good certificate and CA pool
	leaf    *x509.Certificate
}

// fileStamp is what tells that a file changed: its modification time and
// size (zero if it could not be read).
type fileStamp struct {
	modTime time.Time
	size    int64
}

// NewTLS loads the certificate, key and client CAs. It fails if they cannot
// be read, do not match, or the configuration is inconsistent.
func NewTLS(cfg TLSConfig) (*TLS, error) {
	switch {
	case cfg.CertFile == "" || cfg.KeyFile == "":
		return nil, errors.New("TLS: need both a certificate file and a key file")
	case cfg.ClientAuth != tls.NoClientCert && cfg.ClientAuth != tls.VerifyClientCertIfGiven && cfg.ClientAuth != tls.RequireAndVerifyClientCert:
		return nil, fmt.Errorf("TLS: client auth %s is not supported: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert", cfg.ClientAuth)
	case cfg.ClientAuth != tls.NoClientCert && cfg.ClientCAFile == "":
		return nil, errors.New("TLS: verifying client certificates needs a client CA file")
	case cfg.ClientAuth == tls.NoClientCert && cfg.ClientCAFile != "":
		return nil, errors.New("TLS: a client CA file is given, but client certificates are not asked for")
	case cfg.ClientPrincipal != "" && cfg.ClientPrincipal != PrincipalCommonName && cfg.ClientPrincipal != PrincipalSPIFFEID:
		return nil, fmt.Errorf("TLS: client principal rule %q is not one: use %q or %q", cfg.ClientPrincipal, PrincipalCommonName, PrincipalSPIFFEID)
	case len(cfg.ClientIssuerSPKIs) > 0 && cfg.ClientAuth == tls.NoClientCert:
		return nil, errors.New("TLS: pinned client certificate issuers are given, but client certificates are not asked for")
	}
	if cfg.ReloadCheckInterval <= 0 {
		cfg.ReloadCheckInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rules := certificateRules{principal: cfg.ClientPrincipal, issuers: map[[sha256.Size]byte]bool{}}
	for _, digest := range cfg.ClientIssuerSPKIs {
		rules.issuers[digest] = true
	}
	t := &TLS{cfg: cfg, rules: rules, handshakes: newHandshakeLog(cfg.Logger, cfg.Metrics), checked: time.Now(), stamps: cfg.stamps()}
	var err error
	if t.current, t.leaf, err = cfg.load(); err != nil {
		return nil, err
	}
	if cfg.Metrics != nil {
		cfg.Metrics.watchCertificate(t)
	}
	return t, nil
}

func (c TLSConfig) stamps() [3]fileStamp {
	var stamps [3]fileStamp
	for i, name := range []string{c.CertFile, c.KeyFile, c.ClientCAFile} {
		if info, err := os.Stat(name); name != "" && err == nil {
			stamps[i] = fileStamp{modTime: info.ModTime(), size: info.Size()}
		}
	}
	return stamps
}

// load reads the files into a server configuration.
func (c TLSConfig) load() (*tls.Config, *x509.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS certificate %s and key %s: %w", c.CertFile, c.KeyFile, err)
	}
	if cert.Leaf == nil { // GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, nil, fmt.Errorf("TLS certificate %s: %w", c.CertFile, err)
		}
	}
	config := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   c.ClientAuth,
		MinVersion:   tls.VersionTLS12,
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("TLS client CA: %w", err)
		}
		config.ClientCAs = x509.NewCertPool()
		if !config.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("TLS client CA %s: no PEM certificate in it", c.ClientCAFile)
		}
	}
	return config, cert.Leaf, nil
}

// config returns the configuration of the current files, reading them
// again if they changed since they were last checked, at most once every
// ReloadCheckInterval.
func (t *TLS) config() *tls.Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Since(t.checked) < t.cfg.ReloadCheckInterval {
		return t.current
	}
	t.checked = time.Now()
	stamps := t.cfg.stamps()
	if stamps == t.stamps {
		return t.current
	}
	// Remember the new stamps even if loading fails: files caught halfway
	// through a rotation change again when it is over.
	t.stamps = stamps
	config, leaf, err := t.cfg.load()
	if err != nil {
		t.cfg.Logger.Warn("TLS files changed but cannot be loaded; keeping the previous certificate",
			"error", err, "serial", t.leaf.SerialNumber.String())
		return t.current
	}
	t.current, t.leaf = config, leaf
	t.cfg.Logger.Info("TLS certificate reloaded", "subject", leaf.Subject.String(),
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	return t.current
}

// served returns the certificate that handshakes are served now, after
// checking the files for a rotation as a handshake does: its expiry is
// exported (ledgerd_tls_certificate_expiry_timestamp_seconds), and a scrape
// should see a rotated certificate even if no client connected since.
func (t *TLS) served() *x509.Certificate {
	t.config()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.leaf
}

// serverConfig returns a configuration whose handshakes use the current
// files, offering nextProtos by ALPN.
func (t *TLS) serverConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			config := t.config().Clone()
			config.NextProtos = nextProtos
			return config, nil
		},
	}
}

// HTTPConfig is the TLS configuration of the HTTP port (HTTP/2 and
// HTTP/1.1): wrap its listener with tls.NewListener.
func (t *TLS) HTTPConfig() *tls.Config {
	return t.serverConfig("h2", "http/1.1")
}

// ServerOption is the gRPC server's transport credentials: TLS on every
// listener except the in-process one of the HTTP gateway (see
// Server.HTTPHandler), which cannot be reached from outside the process.
func (t *TLS) ServerOption() grpc.ServerOption {
	return grpc.Creds(gatewayOrTLS{TransportCredentials: credentials.NewTLS(t.serverConfig("h2")), tls: t})
}

// gatewayOrTLS is TLS (or, as server.New installs it by default, no
// transport security), except on connections from the HTTP gateway's
// in-process listener, which are marked as such (gatewayAuthInfo) so that
// the client certificate principal that the gateway forwards is trusted
// from them, and only from them. A TLS connection's client certificate is
// mapped to its principal once, at the handshake (certificateAuthInfo);
// a failed handshake is logged and counted.
type gatewayOrTLS struct {
	credentials.TransportCredentials
	tls *TLS
}

func (c gatewayOrTLS) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := conn.(*inProcessConn); ok {
		return conn, gatewayAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
	}
	secured, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.tls.handshakes.failed("grpc", conn.RemoteAddr().String(), err)
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok {
		return secured, info, nil
	}
	principal, refusal := c.tls.rules.principalOf(tlsInfo.State.VerifiedChains)
	return secured, certificateAuthInfo{TLSInfo: tlsInfo, principal: principal, refusal: refusal}, nil
}

func (c gatewayOrTLS) Clone() credentials.TransportCredentials {
	return gatewayOrTLS{TransportCredentials: c.TransportCredentials.Clone(), tls: c.tls}
}

// certificateAuthInfo is the AuthInfo of a TLS connection to the gRPC
// port: its TLS state, and the principal of its client certificate ("" if
// none), or why that certificate is not a principal.
type certificateAuthInfo struct {
	credentials.TLSInfo
	principal string
	refusal   error
}

// gatewayAuthInfo marks a connection from the HTTP gateway.
type gatewayAuthInfo struct {
	credentials.CommonAuthInfo
}

func (gatewayAuthInfo) AuthType() string { return "ledgerd-http-gateway" }

// certificatePrincipalKey is the metadata key in which the HTTP gateway
// forwards the principal of an HTTPS caller's verified client certificate,
// and certificateRefusalKey the one in which it forwards why that
// certificate is not a principal. They are trusted only on the gateway's
// in-process connection, and the gateway never forwards them from a
// caller's headers.
const (
	certificatePrincipalKey = "ledgerd-client-certificate-principal"
	certificateRefusalKey   = "ledgerd-client-certificate-refusal"
)

// defaultCertificateRules map the certificates of a TLS connection that
// TLS.ServerOption did not set up (credentials of the caller of New's
// own): "cert:<CN>", any issuer.
var defaultCertificateRules = certificateRules{principal: PrincipalCommonName}

// certificateCredentialKey is the metadata key in which the HTTP gateway
// forwards the credential id of an HTTPS caller's verified client
// certificate (see certificateCredential), trusted like
// certificatePrincipalKey.
const certificateCredentialKey = "ledgerd-client-certificate-id"

// certificateCredential is the credential id of a certificate in the
// request log: "cert-sha256:" and the SHA-256 fingerprint of its DER
// encoding, in hex, which `openssl x509 -noout -fingerprint -sha256`
// prints too (with colons, in upper case). Unlike the serial number, it is
// unique whichever CA issued the certificate.
func certificateCredential(leaf *x509.Certificate) string {
	sum := sha256.Sum256(leaf.Raw)
	return "cert-sha256:" + hex.EncodeToString(sum[:])
}

// certificateCredentialOf returns the credential id of the caller's
// verified client certificate, or "" if it has none.
func certificateCredentialOf(ctx context.Context) string {
	p, _ := peer.FromContext(ctx)
	if p == nil {
		return ""
	}
	switch info := p.AuthInfo.(type) {
	case certificateAuthInfo:
		if len(info.State.VerifiedChains) > 0 {
			return certificateCredential(info.State.VerifiedChains[0][0])
		}
	case credentials.TLSInfo:
		if len(info.State.VerifiedChains) > 0 {
			return certificateCredential(info.State.VerifiedChains[0][0])
		}
	case gatewayAuthInfo:
		if values := metadata.ValueFromIncomingContext(ctx, certificateCredentialKey); len(values) == 1 {
			return values[0]
		}
	}
	return ""
}

// certificatePrincipalOf returns the principal of the caller's verified
// client certificate: presented on a TLS connection, or forwarded by the
// HTTP gateway, and named by the same rules (certificateRules.principalOf)
// either way. ok is false if the caller has none; a verified certificate
// that is not a principal is UNAUTHENTICATED.
func certificatePrincipalOf(ctx context.Context) (principal string, ok bool, err error) {
	p, _ := peer.FromContext(ctx)
	if p == nil {
		return "", false, nil
	}
	switch info := p.AuthInfo.(type) {
	case certificateAuthInfo:
		principal, err = info.principal, info.refusal
	case credentials.TLSInfo:
		principal, err = defaultCertificateRules.principalOf(info.State.VerifiedChains)
	case gatewayAuthInfo:
		if refusal := metadata.ValueFromIncomingContext(ctx, certificateRefusalKey); len(refusal) > 0 {
			return "", true, unauthenticated(refusal[0])
		}
		values := metadata.ValueFromIncomingContext(ctx, certificatePrincipalKey)
		if len(values) != 1 || values[0] == "" {
			return "", false, nil
		}
		principal = values[0]
	}
	if err != nil {
		return "", true, err
	}
	return principal, principal != "", nil
}

// inProcessListener is a listener that only this process can connect to
// (by dial): the HTTP gateway's way into the gRPC server, which needs no
// TLS and no client certificate of its own.
type inProcessListener struct {
	conns     chan *inProcessConn
	done      chan struct{}
	closeOnce sync.Once
}

// inProcessConn is the server's end of an in-process connection. Its
// remote address is inProcessAddr, which tells the gateway's calls apart
// (see callSource).
type inProcessConn struct {
	net.Conn
}

func (inProcessConn) RemoteAddr() net.Addr { return inProcessAddr{} }

func newInProcessListener() *inProcessListener {
	return &inProcessListener{conns: make(chan *inProcessConn), done: make(chan struct{})}
}

func (l *inProcessListener) Accept() (net.Conn, error) {
	select {
	case conn := <-l.conns:
		return conn, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *inProcessListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *inProcessListener) Addr() net.Addr { return inProcessAddr{} }

// dial connects to the listener (grpc.WithContextDialer).
func (l *inProcessListener) dial(ctx context.Context, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- &inProcessConn{Conn: server}:
		return client, nil
	case <-l.done:
		err := net.ErrClosed
		return nil, errors.Join(err, client.Close(), server.Close())
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), client.Close(), server.Close())
	}
}

type inProcessAddr struct{}

func (inProcessAddr) Network() string { return "in-process" }
func (inProcessAddr) String() string  { return "ledgerd-http-gateway" }
