package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The reasons a TLS handshake fails, as ledgerd_tls_handshake_failures_total
// and the log name them.
const (
	// handshakeNoClientCertificate: a certificate was required and the
	// client sent none.
	handshakeNoClientCertificate = "no_client_certificate"
	// handshakeUntrustedClientCertificate: the client's certificate did
	// not verify against the client CAs (unknown CA, expired, not for
	// client authentication...).
	handshakeUntrustedClientCertificate = "untrusted_client_certificate"
	// handshakeOther: anything else (not TLS at all, a client that does
	// not trust the server's certificate, a timeout...).
	handshakeOther = "other"
)

// handshakeReasons lists every reason, so that each one's count starts at 0.
var handshakeReasons = []string{handshakeNoClientCertificate, handshakeUntrustedClientCertificate, handshakeOther}

// Bounds of the failed-handshake log, so that a scanner cannot flood it:
// one line per source address per handshakeLogInterval (the next line says
// how many failures were not logged meanwhile), at most
// handshakeLogBurst lines at once and handshakeLogRate a second overall,
// and at most handshakeLogSources sources remembered. Every failure is
// counted in the metric, logged or not.
const (
	handshakeLogInterval = time.Minute
	handshakeLogBurst    = 20
	handshakeLogRate     = 1
	handshakeLogSources  = 10000
)

// handshakeLog logs (client-certificate failures at WARN, others at
// DEBUG) and counts the TLS handshakes that fail on ledgerd's ports.
type handshakeLog struct {
	logger  *slog.Logger
	metrics *Metrics // nil: not counted

	mu      sync.Mutex
	sources map[string]*handshakeSource // by IP address
	overall *rate.Limiter
}

// handshakeSource is what the log remembers of a source address.
type handshakeSource struct {
	logged     time.Time // its last line
	suppressed int       // failures not logged since
}

func newHandshakeLog(logger *slog.Logger, metrics *Metrics) *handshakeLog {
	return &handshakeLog{
		logger: logger, metrics: metrics,
		sources: map[string]*handshakeSource{},
		overall: rate.NewLimiter(handshakeLogRate, handshakeLogBurst),
	}
}

// failed records a failed handshake on port ("grpc" or "http") from
// source (host:port): logged (or not), then counted, so that a count says
// the log has seen the failures it counts.
func (h *handshakeLog) failed(port, source string, err error) {
	reason := handshakeReason(err)
	h.log(port, source, reason, err)
	if h.metrics != nil {
		h.metrics.tlsHandshakeFailures.WithLabelValues(port, reason).Inc()
	}
}

// log logs a failed handshake, unless the bounds say not to.
func (h *handshakeLog) log(port, source, reason string, err error) {
	level := slog.LevelWarn
	if reason == handshakeOther {
		level = slog.LevelDebug
	}
	if !h.logger.Enabled(context.Background(), level) {
		return
	}
	suppressed, ok := h.admit(source, time.Now())
	if !ok {
		return
	}
	attrs := []slog.Attr{slog.String("port", port), slog.String("source", source), slog.String("reason", reason),
		slog.String("error", err.Error()), slog.Int("suppressed", suppressed)}
	var verification *tls.CertificateVerificationError
	if errors.As(err, &verification) && len(verification.UnverifiedCertificates) > 0 {
		cert := verification.UnverifiedCertificates[0]
		attrs = append(attrs, slog.String("client_subject", cert.Subject.String()),
			slog.String("client_issuer", cert.Issuer.String()), slog.String("client_serial", cert.SerialNumber.String()))
	}
	msg := "TLS handshake failed: client certificate refused"
	if reason == handshakeOther {
		msg = "TLS handshake failed"
	}
	h.logger.LogAttrs(context.Background(), level, msg, attrs...)
}

// admit decides whether a failure from source is logged now, and returns
// how many of its failures were not logged since its last line.
func (h *handshakeLog) admit(source string, now time.Time) (suppressed int, ok bool) {
	ip := source
	if host, _, err := net.SplitHostPort(source); err == nil {
		ip = host // a scanner changes ports, not addresses
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sources[ip]
	if s == nil {
		if len(h.sources) >= handshakeLogSources {
			for addr, old := range h.sources {
				if now.Sub(old.logged) >= handshakeLogInterval {
					delete(h.sources, addr)
				}
			}
			if len(h.sources) >= handshakeLogSources {
				return 0, false
			}
		}
		s = &handshakeSource{}
		h.sources[ip] = s
	} else if now.Sub(s.logged) < handshakeLogInterval {
		s.suppressed++
		return 0, false
	}
	if !h.overall.AllowN(now, 1) {
		s.suppressed++
		return 0, false
	}
	suppressed, s.suppressed, s.logged = s.suppressed, 0, now
	return suppressed, true
}

// handshakeReason classifies a server-side handshake error.
func handshakeReason(err error) string {
	var verification *tls.CertificateVerificationError
	switch {
	// The server verifies no certificate but the client's.
	case errors.As(err, &verification), strings.Contains(err.Error(), "tls: failed to verify certificate"):
		return handshakeUntrustedClientCertificate
	// crypto/tls has no error value for it.
	case strings.Contains(err.Error(), "tls: client didn't provide a certificate"):
		return handshakeNoClientCertificate
	}
	return handshakeOther
}

// httpHandshakeErrorPrefix begins the lines that net/http writes to a
// server's ErrorLog for a failed TLS handshake, followed by "ADDR: ERROR".
const httpHandshakeErrorPrefix = "http: TLS handshake error from "

// httpErrorLog is an http.Server's ErrorLog: the failed handshakes go to
// the handshake log (net/http reports them nowhere else), the other lines
// to logger at WARN.
type httpErrorLog struct {
	handshakes *handshakeLog
	logger     *slog.Logger
}

func (w httpErrorLog) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	if rest, ok := strings.CutPrefix(line, httpHandshakeErrorPrefix); ok {
		if source, message, ok := strings.Cut(rest, ": "); ok {
			w.handshakes.failed("http", source, errors.New(message))
			return len(p), nil
		}
	}
	w.logger.Warn(line)
	return len(p), nil
}

// HTTPErrorLog returns the ErrorLog for the http.Server of a port served
// with HTTPConfig: its failed handshakes are logged and counted as the
// gRPC port's are (client-certificate failures at WARN, at most one line
// per source address a minute; ledgerd_tls_handshake_failures_total), and
// its other errors are logged to logger at WARN.
func (t *TLS) HTTPErrorLog(logger *slog.Logger) *log.Logger {
	return log.New(httpErrorLog{handshakes: t.handshakes, logger: logger}, "", 0)
}
