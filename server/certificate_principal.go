package server

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
)

// CertificatePrincipal is the rule that names the principal of a verified
// client certificate. One rule applies to every certificate a server
// accepts, so that a certificate has one principal, the same on both
// ports.
type CertificatePrincipal string

// The rules for naming a certificate's principal.
const (
	// PrincipalCommonName names a certificate "cert:" followed by its
	// subject's common name; a certificate without one is not a principal.
	PrincipalCommonName CertificatePrincipal = "cn"
	// PrincipalSPIFFEID names a certificate by its SPIFFE ID, its one URI
	// SAN "spiffe://trust-domain/path", as the principal itself (which
	// neither a "cert:" principal nor a name without a scheme can be).
	// The common name is ignored; a certificate with no URI SAN, several,
	// or one that is not a valid SPIFFE ID, is not a principal.
	PrincipalSPIFFEID CertificatePrincipal = "spiffe"
)

// CertificatePrincipalPrefix begins the principal of a verified client
// certificate named by its common name: "cert:" followed by the subject's
// common name, so that a certificate can never be mistaken for a token's
// principal.
const CertificatePrincipalPrefix = "cert:"

// SPIFFEPrincipalPrefix begins the principal of a certificate named by its
// SPIFFE ID (PrincipalSPIFFEID).
const SPIFFEPrincipalPrefix = "spiffe://"

// maxSPIFFEPrincipalBytes is the longest SPIFFE ID that names a principal:
// the longest principal a role binding may name.
const maxSPIFFEPrincipalBytes = 256

// certificateRules decide the principal of a verified client certificate,
// for both ports (see TLS): which name is its principal, and which CAs
// may issue principals.
type certificateRules struct {
	principal CertificatePrincipal
	// issuers are the SHA-256 digests of the SubjectPublicKeyInfo of the
	// CAs whose certificates are principals; empty: any CA of the client
	// CA file.
	issuers map[[sha256.Size]byte]bool
}

// principalOf returns the principal of the client certificate whose
// verified chains are given: "" and nil if there are none (no
// certificate), or an UNAUTHENTICATED status if the certificate is not a
// principal. It is the one function that maps certificates to principals,
// for the gRPC port and for the HTTP port's gateway alike.
func (r certificateRules) principalOf(chains [][]*x509.Certificate) (string, error) {
	if len(chains) == 0 {
		return "", nil
	}
	if len(r.issuers) > 0 && !r.pinnedIssuer(chains) {
		return "", unauthenticated("the client certificate was not issued by a CA whose certificates are principals here (the issuers are pinned)")
	}
	leaf := chains[0][0]
	switch r.principal {
	case PrincipalSPIFFEID:
		return spiffePrincipal(leaf)
	default:
		if leaf.Subject.CommonName == "" {
			return "", unauthenticated("the client certificate's subject has no common name, which names its principal")
		}
		return CertificatePrincipalPrefix + leaf.Subject.CommonName, nil
	}
}

// pinnedIssuer reports whether one of the verified chains passes through a
// pinned CA (the leaf itself does not count).
func (r certificateRules) pinnedIssuer(chains [][]*x509.Certificate) bool {
	for _, chain := range chains {
		for _, ca := range chain[1:] {
			if r.issuers[sha256.Sum256(ca.RawSubjectPublicKeyInfo)] {
				return true
			}
		}
	}
	return false
}

// spiffePrincipal returns the SPIFFE ID of an X.509-SVID: the one URI SAN
// of a certificate that is not a CA.
func spiffePrincipal(leaf *x509.Certificate) (string, error) {
	if leaf.IsCA {
		return "", unauthenticated("the client certificate is a CA certificate, which is not a SPIFFE ID's")
	}
	if len(leaf.URIs) != 1 {
		return "", unauthenticated(fmt.Sprintf("the client certificate must name its principal by exactly one URI SAN, a SPIFFE ID (spiffe://trust-domain/path); it has %d", len(leaf.URIs)))
	}
	id, err := spiffeID(leaf.URIs[0])
	if err != nil {
		return "", unauthenticated(fmt.Sprintf("the client certificate's URI SAN is not a SPIFFE ID: %v", err))
	}
	return id, nil
}

// spiffeID checks a URI against the SPIFFE ID format (lower-case trust
// domain; a path of segments of letters, digits, '.', '-' and '_'; no
// port, user, query or fragment, nothing escaped) and returns it.
func spiffeID(u *url.URL) (string, error) {
	switch {
	case u.Scheme != "spiffe":
		return "", fmt.Errorf("the scheme must be spiffe, got %q", u.Scheme)
	case u.Opaque != "" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "":
		return "", fmt.Errorf("it must be spiffe://trust-domain/path, without user, port, query, fragment or escapes")
	case u.Host == "" || strings.Trim(u.Host, "abcdefghijklmnopqrstuvwxyz0123456789.-_") != "":
		return "", fmt.Errorf("the trust domain must be lower-case letters, digits, '.', '-' and '_'")
	case u.Path == "" || u.Path == "/":
		return "", fmt.Errorf("the path must name a workload")
	}
	for _, segment := range strings.Split(u.Path[1:], "/") {
		if segment == "" || segment == "." || segment == ".." ||
			strings.Trim(segment, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != "" {
			return "", fmt.Errorf("the path's segments must be letters, digits, '.', '-' and '_' (not '.' or '..', none empty)")
		}
	}
	id := SPIFFEPrincipalPrefix + u.Host + u.Path
	if len(id) > maxSPIFFEPrincipalBytes {
		return "", fmt.Errorf("it is %d bytes long, longer than a principal may be (%d)", len(id), maxSPIFFEPrincipalBytes)
	}
	return id, nil
}

// unauthenticated is the status of a certificate that is not a principal.
func unauthenticated(message string) error {
	return withDetails(codes.Unauthenticated, ReasonUnauthenticated, message, nil)
}
