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
	"google.golang.org/grpc/codes"
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
	// ReloadCheckInterval is how often, at most, a handshake checks whether
	// the files changed on disk (their modification time or size). Defaults
	// to 1s.
	ReloadCheckInterval time.Duration
	// Logger reports reloads and files that could not be reloaded.
	// Defaults to slog.Default().
	Logger *slog.Logger
}

// TLS serves ledgerd's ports over TLS from certificate files that it reads
// again when they change: a rotated certificate (or client CA) is used by
// the next handshake, without a restart. If the new files cannot be read or
// do not match, the last good certificate stays in use and a warning is
// logged. Verified client certificates authenticate their subject's common
// name as the principal "cert:<CN>" (see Auth).
type TLS struct {
	cfg TLSConfig

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
	}
	if cfg.ReloadCheckInterval <= 0 {
		cfg.ReloadCheckInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &TLS{cfg: cfg, checked: time.Now(), stamps: cfg.stamps()}
	var err error
	if t.current, t.leaf, err = cfg.load(); err != nil {
		return nil, err
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
	return grpc.Creds(gatewayOrTLS{TransportCredentials: credentials.NewTLS(t.serverConfig("h2"))})
}

// gatewayOrTLS is TLS, except on connections from the HTTP gateway's
// in-process listener, which are marked as such (gatewayAuthInfo) so that
// the client certificate principal that the gateway forwards is trusted
// from them, and only from them.
type gatewayOrTLS struct {
	credentials.TransportCredentials
}

func (c gatewayOrTLS) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := conn.(*inProcessConn); ok {
		return conn, gatewayAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
	}
	return c.TransportCredentials.ServerHandshake(conn)
}

func (c gatewayOrTLS) Clone() credentials.TransportCredentials {
	return gatewayOrTLS{TransportCredentials: c.TransportCredentials.Clone()}
}

// gatewayAuthInfo marks a connection from the HTTP gateway.
type gatewayAuthInfo struct {
	credentials.CommonAuthInfo
}

func (gatewayAuthInfo) AuthType() string { return "ledgerd-http-gateway" }

// certificatePrincipalKey is the metadata key in which the HTTP gateway
// forwards the principal of an HTTPS caller's verified client certificate.
// It is trusted only on the gateway's in-process connection, and the
// gateway never forwards it from a caller's headers.
const certificatePrincipalKey = "ledgerd-client-certificate-principal"

// CertificatePrincipalPrefix begins the principal of a verified client
// certificate: "cert:" followed by the subject's common name, so that a
// certificate can never be mistaken for a token's principal.
const CertificatePrincipalPrefix = "cert:"

// certificatePrincipal returns the principal of a verified client
// certificate, or "" if its subject has no common name.
func certificatePrincipal(leaf *x509.Certificate) string {
	if leaf.Subject.CommonName == "" {
		return ""
	}
	return CertificatePrincipalPrefix + leaf.Subject.CommonName
}

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
// HTTP gateway. ok is false if the caller has none; a verified certificate
// without a common name is UNAUTHENTICATED.
func certificatePrincipalOf(ctx context.Context) (principal string, ok bool, err error) {
	p, _ := peer.FromContext(ctx)
	if p == nil {
		return "", false, nil
	}
	switch info := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		if len(info.State.VerifiedChains) == 0 {
			return "", false, nil
		}
		principal = certificatePrincipal(info.State.VerifiedChains[0][0])
	case gatewayAuthInfo:
		values := metadata.ValueFromIncomingContext(ctx, certificatePrincipalKey)
		if len(values) != 1 {
			return "", false, nil
		}
		principal = values[0]
	default:
		return "", false, nil
	}
	if principal == "" {
		return "", true, withDetails(codes.Unauthenticated, ReasonUnauthenticated,
			"the client certificate's subject has no common name, which names its principal", nil)
	}
	return principal, true, nil
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
