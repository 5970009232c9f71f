package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/ledgerd/ledgerd/ledger"
)

// The reasons an authentication is refused: the values of the reason label
// of ledgerd_auth_failures_total and of the auth.refusal log field. The
// caller is told less (an unknown token and a wrong secret are both
// "invalid token").
const (
	refusalMissing         = "missing_credentials"      // neither a token nor a client certificate
	refusalMalformed       = "malformed"                // not "Bearer ldg_<id>_<secret>"
	refusalUnknownToken    = "unknown_token"            // no token has that id
	refusalWrongSecret     = "wrong_secret"             // the id is known, the secret is not its
	refusalRevoked         = "revoked"                  // the right secret of a revoked token
	refusalExpired         = "expired"                  // the right secret of an expired token
	refusalCertificateName = "certificate_without_name" // a verified certificate that names no principal
	refusalRateLimited     = "rate_limited"             // the source failed too often (see failureLimiter)
)

// refusalReasons lists every reason, so that each one's count starts at 0.
var refusalReasons = []string{
	refusalMissing, refusalMalformed, refusalUnknownToken, refusalWrongSecret,
	refusalRevoked, refusalExpired, refusalCertificateName, refusalRateLimited,
}

// attempt is what one call presented, and what came of it.
type attempt struct {
	source     string // callSource
	principal  string // authenticated, or the refused token's
	credential string // "token:<id>" or "cert-sha256:<fingerprint>"; "" if none
	refusal    string // one of the refusal reasons; "" if authenticated
}

// refused records a refused authentication: it counts it, logs it at WARN
// (a source refused for its failures only once per stretch), takes a token
// from its source's bucket, and queues the audit event of a revoked or
// expired token.
func (a *Auth) refused(ctx context.Context, at attempt, now time.Time, firstLimited bool) {
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.authFailures.WithLabelValues(at.refusal).Inc()
	}
	if at.refusal == refusalRateLimited {
		if firstLimited {
			a.logger.LogAttrs(ctx, slog.LevelWarn, "authentication refused: too many failures from this source; refusing it until its limit refills",
				refusalAttrs(ctx, at, slog.Int("failures", a.cfg.FailedAuthLimit.Burst), slog.Float64("refill_per_second", a.cfg.FailedAuthLimit.PerSecond))...)
		}
		return
	}
	a.failures.fail(at.source, now)
	a.logger.LogAttrs(ctx, slog.LevelWarn, "authentication refused", refusalAttrs(ctx, at)...)
	if at.refusal == refusalRevoked || at.refusal == refusalExpired {
		a.audit.add(ledger.CredentialRefusal{
			TokenID: tokenIDOf(at.credential), Principal: at.principal, Reason: at.refusal, Source: at.source, At: now,
		})
	}
}

func refusalAttrs(ctx context.Context, at attempt, more ...slog.Attr) []slog.Attr {
	attrs := make([]slog.Attr, 0, 6+len(more))
	attrs = append(attrs, slog.String("auth.refusal", at.refusal))
	if at.credential != "" {
		attrs = append(attrs, slog.String("credential", at.credential))
	}
	if at.principal != "" {
		attrs = append(attrs, slog.String("principal", at.principal))
	}
	if at.source != "" {
		attrs = append(attrs, slog.String("peer.address", at.source))
	}
	if method, ok := grpc.Method(ctx); ok {
		attrs = append(attrs, slog.String("grpc.method", methodName(method)))
	}
	return append(attrs, more...)
}

// tokenCredential is the credential id of a token in logs: "token:<id>".
// The id is public (it is in listings); the secret never is.
func tokenCredential(id string) string { return "token:" + id }

func tokenIDOf(credential string) string { return credential[len("token:"):] }

// credentialRefusalInterval bounds the credential_refused audit events: at
// most one per token per interval on each replica.
const credentialRefusalInterval = time.Minute

// maxQueuedRefusals bounds the credential_refused events waiting to be
// written; beyond it, a refusal is not recorded until a later one of the
// same token.
const maxQueuedRefusals = 256

// refusalAudit writes the audit events of revoked and expired tokens
// presented with their right secret, bounded so that such a token's holder
// cannot flood the events table or load the database: at most one event
// per token per minute per replica (its refusals field counts the calls it
// stands for), queued in memory (at most maxQueuedRefusals) and written
// by Auth.Run in one statement per batch, never on the refused call's path.
type refusalAudit struct {
	mu      sync.Mutex
	byToken map[string]*tokenRefusals // few: only tokens whose secret was presented
	queue   []ledger.CredentialRefusal
	wake    chan struct{}
}

// tokenRefusals are a token's refusals since its last recorded event.
type tokenRefusals struct {
	recordedAt time.Time // of the last queued event
	unrecorded int64     // refusals since, not in any event
}

func newRefusalAudit() *refusalAudit {
	return &refusalAudit{byToken: map[string]*tokenRefusals{}, wake: make(chan struct{}, 1)}
}

// add counts a refusal, and queues its event unless the token had one
// within credentialRefusalInterval or the queue is full.
func (r *refusalAudit) add(refusal ledger.CredentialRefusal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.byToken[refusal.TokenID]
	if t == nil {
		t = &tokenRefusals{}
		r.byToken[refusal.TokenID] = t
	}
	t.unrecorded++
	if !t.recordedAt.IsZero() && refusal.At.Sub(t.recordedAt) < credentialRefusalInterval {
		return
	}
	if len(r.queue) >= maxQueuedRefusals {
		return // counted: a later refusal's event will include it
	}
	refusal.Refusals, t.unrecorded, t.recordedAt = t.unrecorded, 0, refusal.At
	r.queue = append(r.queue, refusal)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take empties the queue.
func (r *refusalAudit) take() []ledger.CredentialRefusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	queued := r.queue
	r.queue = nil
	return queued
}

// writeRefusals writes the queued credential_refused events whenever there
// are some, until ctx ends; it then writes those still queued, for at most
// a few seconds.
func (a *Auth) writeRefusals(ctx context.Context) {
	write := func(ctx context.Context) {
		if queued := a.audit.take(); len(queued) > 0 {
			if err := a.store.RecordCredentialRefusals(ctx, queued); err != nil {
				a.logger.WarnContext(ctx, "recording the use of revoked or expired tokens; these events are lost", "error", err, "events", len(queued))
			}
		}
	}
	for {
		select {
		case <-a.audit.wake:
			write(ctx)
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			write(final)
			return
		}
	}
}
