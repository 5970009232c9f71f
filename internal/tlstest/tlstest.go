// Package tlstest makes certificate authorities and certificates for tests
// of ledgerd's TLS: a CA per test, server certificates for localhost and
// 127.0.0.1, and client certificates whose common name or URI SAN (a SPIFFE
// ID) is a principal.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// CA is a certificate authority made for a test.
type CA struct {
	Cert *x509.Certificate
	// PEM is the CA certificate in PEM, for a CA file.
	PEM []byte
	key *ecdsa.PrivateKey
}

// NewCA returns a new CA named name.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	template := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	require.NoError(tb, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Pool returns a pool that trusts the CA.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Pair is a certificate and its key.
type Pair struct {
	Cert            *x509.Certificate
	CertPEM, KeyPEM []byte
}

// Issue returns a certificate signed by the CA for commonName (none if
// empty), valid for servers and clients on localhost and 127.0.0.1.
func (ca *CA) Issue(tb testing.TB, commonName string) Pair {
	tb.Helper()
	return ca.IssueWithURIs(tb, commonName)
}

// IssueWithURIs is Issue with URI SANs as well, such as a SPIFFE ID
// ("spiffe://example.org/payments/worker").
func (ca *CA) IssueWithURIs(tb testing.TB, commonName string, uris ...string) Pair {
	tb.Helper()
	var parsed []*url.URL
	for _, uri := range uris {
		u, err := url.Parse(uri)
		require.NoError(tb, err)
		parsed = append(parsed, u)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	template := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"ledgerd tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		URIs:         parsed,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.Cert, key.Public(), ca.key)
	require.NoError(tb, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(tb, err)
	return Pair{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// TLSCertificate returns the pair for a tls.Config.
func (p Pair) TLSCertificate(tb testing.TB) tls.Certificate {
	tb.Helper()
	cert, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	require.NoError(tb, err)
	return cert
}

// WriteFiles writes the pair to dir/name.crt and dir/name.key, each
// replaced at once (written aside, then renamed) as rotation tools do, and
// returns their paths.
func (p Pair) WriteFiles(tb testing.TB, dir, name string) (certFile, keyFile string) {
	tb.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	WriteFile(tb, certFile, p.CertPEM)
	WriteFile(tb, keyFile, p.KeyPEM)
	return certFile, keyFile
}

// WriteFile replaces the file at path with data at once.
func WriteFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	aside := path + ".new"
	require.NoError(tb, os.WriteFile(aside, data, 0o600))
	require.NoError(tb, os.Rename(aside, path))
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	require.NoError(tb, err)
	return n
}
