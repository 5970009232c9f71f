package ledger

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what a principal may do in the namespaces a binding names.
type Role string

// The roles. Each includes the ones listed under it where it says so.
const (
	// RoleWorker may Reserve, Heartbeat, Complete, Fail, Release and Lookup.
	RoleWorker Role = "worker"
	// RoleReader may Lookup and read listings, histories and events.
	RoleReader Role = "reader"
	// RoleAdmin may do what a reader may, plus the admin actions and the
	// namespace settings.
	RoleAdmin Role = "admin"
	// RolePlatformAdmin may do everything in every namespace, and manage
	// tokens and role bindings. Its bindings always name "*".
	RolePlatformAdmin Role = "platform-admin"
)

// RoleBinding gives a principal a role in the namespaces its pattern
// matches: a namespace name, a prefix ending in a separator ('-', '_' or
// '.') followed by "*" ("payments-*"), or "*" for all.
type RoleBinding struct {
	Principal        string    `db:"principal"`
	NamespacePattern string    `db:"namespace_pattern"`
	Role             Role      `db:"role"`
	CreatedAt        time.Time `db:"created_at"`
	CreatedBy        string    `db:"created_by"`
}

// Matches reports whether the binding's pattern covers namespace.
func (b RoleBinding) Matches(namespace string) bool {
	if prefix, ok := strings.CutSuffix(b.NamespacePattern, "*"); ok {
		return strings.HasPrefix(namespace, prefix)
	}
	return b.NamespacePattern == namespace
}

// Token is an API token as stored: its secret is kept only as a hash.
type Token struct {
	ID          string     `db:"id"`
	Principal   string     `db:"principal"`
	SecretHash  []byte     `db:"secret_hash"`
	Description string     `db:"description"`
	CreatedAt   time.Time  `db:"created_at"`
	CreatedBy   string     `db:"created_by"`
	ExpiresAt   *time.Time `db:"expires_at"`
	RevokedAt   *time.Time `db:"revoked_at"`
	RevokedBy   *string    `db:"revoked_by"`
	// LastUsedAt is when the token last authenticated a call, as precise as
	// the replicas' flushes (see RecordTokenUses); nil if never since
	// ledgerd began to record it.
	LastUsedAt *time.Time `db:"last_used_at"`
}

// tokenPrefix starts every token, so that secret scanners can find leaked
// ones: "ldg_<id>_<secret>".
const tokenPrefix = "ldg_"

// ErrBadToken means a bearer token is malformed, unknown, expired, revoked
// or wrong.
var ErrBadToken = errors.New("invalid token")

// ErrTokenRevoked and ErrTokenExpired are the ErrBadToken of a token
// presented with its right secret after it was revoked, or after it
// expired.
var (
	ErrTokenRevoked = fmt.Errorf("%w: revoked", ErrBadToken)
	ErrTokenExpired = fmt.Errorf("%w: expired", ErrBadToken)
)

// ParseToken splits a bearer token into its public id and its secret.
func ParseToken(token string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return "", "", ErrBadToken
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" {
		return "", "", ErrBadToken
	}
	return id, secret, nil
}

// Verify checks a secret against the token's hash, in constant time, and
// the token's expiry and revocation against now. It fails with ErrBadToken
// for a wrong secret, and only for the right one with ErrTokenRevoked or
// ErrTokenExpired: whoever does not hold the secret learns nothing.
func (t Token) Verify(secret string, now time.Time) error {
	sum := sha256.Sum256([]byte(secret))
	switch {
	case subtle.ConstantTimeCompare(sum[:], t.SecretHash) != 1:
		return ErrBadToken
	case t.RevokedAt != nil:
		return ErrTokenRevoked
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return ErrTokenExpired
	}
	return nil
}

func checkPrincipal(principal string) error {
	return checkText("principal", principal, true, 256)
}

// PatternSeparators are the characters a prefix pattern must end with
// before its "*": those a namespace name may contain besides letters and
// digits (see checkNamespace). "team-a-*" covers team-a's namespaces only;
// "team-a*" would cover "team-ab" too.
const PatternSeparators = "-_."

// checkGrantedPattern is checkPattern for a new binding: a prefix must also
// end in a separator. Bindings made before this rule keep working, and can
// still be revoked (see LegacyPattern).
func checkGrantedPattern(pattern string) error {
	if err := checkPattern(pattern); err != nil {
		return err
	}
	if LegacyPattern(pattern) {
		return invalid("namespace_pattern", "a prefix must end in one of %q before '*' (e.g. %q), so that it cannot cover another team's names: got %q",
			PatternSeparators, strings.TrimSuffix(pattern, "*")+"-*", pattern)
	}
	return nil
}

// LegacyPattern reports whether a binding's pattern is a prefix that does
// not end in a separator ("team-a*"), which GrantRole no longer accepts
// because it also covers names that merely begin alike ("team-ab").
func LegacyPattern(pattern string) bool {
	prefix, ok := strings.CutSuffix(pattern, "*")
	return ok && prefix != "" && !strings.ContainsAny(prefix[len(prefix)-1:], PatternSeparators)
}

func checkPattern(pattern string) error {
	if pattern == "*" {
		return nil
	}
	name, _ := strings.CutSuffix(pattern, "*")
	if err := checkNamespace(name); err != nil {
		return invalid("namespace_pattern", "must be a namespace name, a name prefix followed by '*', or '*': %s",
			strings.TrimPrefix(err.Error(), "invalid namespace: "))
	}
	return nil
}

func checkRole(role Role) error {
	switch role {
	case RoleWorker, RoleReader, RoleAdmin, RolePlatformAdmin:
		return nil
	}
	return invalid("role", "must be worker, reader, admin or platform-admin, got %q", role)
}

// CreateToken issues a token for principal, valid for ttl (zero: for the
// Store's MaxTokenTTL, or until revoked if it has none), and returns it
// with its secret: the whole token string is returned only here; the
// ledger keeps a hash. Recorded in the audit trail with the caller and
// reason. A ttl beyond MaxTokenTTL is a *ValidationError naming ttl, and
// nothing is stored.
func (s *Store) CreateToken(ctx context.Context, principal, description string, ttl time.Duration, reason string) (Token, string, error) {
	err := checkPrincipal(principal)
	if err == nil {
		err = checkText("description", description, false, 1024)
	}
	switch {
	case err != nil:
	case ttl < 0:
		err = invalid("ttl", "must not be negative, got %s", ttl)
	case s.maxTokenTTL > 0 && ttl > s.maxTokenTTL:
		err = invalid("ttl", "must be at most %s (the server's maximum token lifetime), got %s", s.maxTokenTTL, ttl)
	case ttl == 0:
		ttl = max(s.maxTokenTTL, 0)
	}
	if err == nil {
		err = checkReason(s.limits, reason)
	}
	if err != nil {
		return Token{}, "", fmt.Errorf("create token for %s: %w", principal, err)
	}
	idBytes, secretBytes := make([]byte, 8), make([]byte, 32)
	_, _ = rand.Read(idBytes) // crypto/rand.Read never fails
	_, _ = rand.Read(secretBytes)
	id, secret := hex.EncodeToString(idBytes), base64.RawURLEncoding.EncodeToString(secretBytes)
	sum := sha256.Sum256([]byte(secret))
	var expires any
	if ttl > 0 {
		expires = ttl.Milliseconds()
	}
	rows, err := queryRows[Token](ctx, s.pool, query("token_create"), id, principal, sum[:], description, callerFrom(ctx), expires, reason)
	if err != nil {
		return Token{}, "", fmt.Errorf("create token for %s: %w", principal, err)
	}
	return rows[0], tokenPrefix + id + "_" + secret, nil
}

// RevokeToken revokes a token by its id, recorded with the caller and the
// reason; revoking it again changes nothing. It fails with a
// *ValidationError or ErrNotFound.
func (s *Store) RevokeToken(ctx context.Context, id, reason string) (Token, error) {
	err := checkText("id", id, true, 256)
	if err == nil {
		err = checkReason(s.limits, reason)
	}
	if err != nil {
		return Token{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	rows, err := queryRows[Token](ctx, s.pool, query("token_revoke"), id, callerFrom(ctx), reason)
	if err != nil {
		return Token{}, fmt.Errorf("revoke token %s: %w", id, err)
	}
	if len(rows) == 0 {
		return Token{}, fmt.Errorf("revoke token %s: %w", id, ErrNotFound)
	}
	return rows[0], nil
}

// Tokens returns every token (revoked and expired ones included), oldest
// first. There are few: one per service or person.
func (s *Store) Tokens(ctx context.Context) ([]Token, error) {
	tokens, err := queryRows[Token](ctx, s.pool, `SELECT id, principal, secret_hash, description, created_at, created_by,
		expires_at, revoked_at, revoked_by, last_used_at FROM api_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return tokens, nil
}

// RecordTokenUses records when tokens were last used, in one statement: a
// replica gathers its uses in memory and flushes them now and then, never
// one write per call. A time earlier than the one stored changes nothing;
// unknown ids are ignored.
func (s *Store) RecordTokenUses(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	ids, times := make([]string, 0, len(lastUsed)), make([]time.Time, 0, len(lastUsed))
	for id, at := range lastUsed {
		ids, times = append(ids, id), append(times, at)
	}
	if _, err := s.pool.Exec(ctx, query("token_used"), ids, times); err != nil {
		return fmt.Errorf("record the use of %d tokens: %w", len(ids), dbError(err))
	}
	return nil
}

// CredentialRefusal is the use of a revoked or expired token, presented
// with its right secret: its EventCredentialRefused.
type CredentialRefusal struct {
	TokenID   string
	Principal string
	// Reason is "revoked" or "expired".
	Reason string
	// Source is the caller's network address.
	Source string
	// At is when the call was refused.
	At time.Time
	// Refusals is how many refused calls the event stands for: this one,
	// and those of the token that were not recorded before it.
	Refusals int64
}

// RecordCredentialRefusals writes an EventCredentialRefused platform event
// for each refusal, in one statement.
func (s *Store) RecordCredentialRefusals(ctx context.Context, refusals []CredentialRefusal) error {
	if len(refusals) == 0 {
		return nil
	}
	n := len(refusals)
	ids, principals, reasons, sources := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	times, counts := make([]time.Time, n), make([]int64, n)
	for i, r := range refusals {
		ids[i], principals[i], reasons[i], sources[i], times[i], counts[i] = r.TokenID, r.Principal, r.Reason, r.Source, r.At, r.Refusals
	}
	if _, err := s.pool.Exec(ctx, query("credential_refused"), ids, principals, reasons, sources, times, counts); err != nil {
		return fmt.Errorf("record %d refused credentials: %w", n, dbError(err))
	}
	return nil
}

// GrantRole binds a role to a principal in the namespaces pattern matches,
// recorded with the caller and the reason. Granting it again changes
// nothing.
func (s *Store) GrantRole(ctx context.Context, binding RoleBinding, reason string) (RoleBinding, error) {
	err := checkPrincipal(binding.Principal)
	if err == nil {
		err = checkGrantedPattern(binding.NamespacePattern)
	}
	if err == nil {
		err = checkRole(binding.Role)
	}
	if err == nil && binding.Role == RolePlatformAdmin && binding.NamespacePattern != "*" {
		err = invalid("namespace_pattern", "must be '*' for the platform-admin role")
	}
	if err == nil {
		err = checkReason(s.limits, reason)
	}
	if err != nil {
		return RoleBinding{}, fmt.Errorf("grant %s: %w", binding.Role, err)
	}
	rows, err := queryRows[RoleBinding](ctx, s.pool, query("role_grant"),
		binding.Principal, binding.NamespacePattern, string(binding.Role), callerFrom(ctx), reason)
	if err != nil {
		return RoleBinding{}, fmt.Errorf("grant %s: %w", binding.Role, err)
	}
	return rows[0], nil
}

// RevokeRole removes a role binding, recorded with the caller and the
// reason. It fails with a *ValidationError, or ErrNotFound for a binding
// that does not exist.
func (s *Store) RevokeRole(ctx context.Context, binding RoleBinding, reason string) error {
	err := checkPrincipal(binding.Principal)
	if err == nil {
		err = checkPattern(binding.NamespacePattern)
	}
	if err == nil {
		err = checkRole(binding.Role)
	}
	if err == nil {
		err = checkReason(s.limits, reason)
	}
	if err != nil {
		return fmt.Errorf("revoke %s: %w", binding.Role, err)
	}
	tag, err := s.pool.Exec(ctx, query("role_revoke"), binding.Principal, binding.NamespacePattern, string(binding.Role), callerFrom(ctx), reason)
	if err != nil {
		return fmt.Errorf("revoke %s: %w", binding.Role, dbError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("revoke %s of %s in %s: %w", binding.Role, binding.Principal, binding.NamespacePattern, ErrNotFound)
	}
	return nil
}

// RoleBindings returns every role binding, by principal.
func (s *Store) RoleBindings(ctx context.Context) ([]RoleBinding, error) {
	bindings, err := queryRows[RoleBinding](ctx, s.pool, `SELECT principal, namespace_pattern, role, created_at, created_by
		FROM role_bindings ORDER BY principal, namespace_pattern, role`)
	if err != nil {
		return nil, fmt.Errorf("list role bindings: %w", err)
	}
	return bindings, nil
}

// Bootstrap creates a platform-admin token for principal directly, for the
// first operator of a new deployment (`ledgerd bootstrap`); afterwards,
// tokens are managed through the API. The token lives for the Store's
// MaxTokenTTL (until revoked if it has none).
func (s *Store) Bootstrap(ctx context.Context, principal string) (Token, string, error) {
	ctx = WithCaller(ctx, "ledgerd-bootstrap")
	if _, err := s.GrantRole(ctx, RoleBinding{Principal: principal, NamespacePattern: "*", Role: RolePlatformAdmin}, "bootstrap"); err != nil {
		return Token{}, "", err
	}
	return s.CreateToken(ctx, principal, "bootstrap", 0, "bootstrap")
}

// CredentialCounts returns how many tokens (revoked and expired ones
// included) and role bindings the database holds; both are zero on a
// database whose schema has no credentials yet (not migrated that far).
// Development mode, which serves without authentication, refuses a database
// that holds any: it would be one that ledgerd replicas with authentication
// share (see cmd/ledgerd).
func (s *Store) CredentialCounts(ctx context.Context) (tokens, bindings int64, err error) {
	// Looked up first, so that the count neither fails on nor creates a
	// schema that predates the credentials.
	var present bool
	err = s.pool.QueryRow(ctx, `SELECT to_regclass('api_tokens') IS NOT NULL AND to_regclass('role_bindings') IS NOT NULL`).Scan(&present)
	if err != nil {
		return 0, 0, fmt.Errorf("count credentials: %w", dbError(err))
	}
	if !present {
		return 0, 0, nil
	}
	err = s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM api_tokens), (SELECT count(*) FROM role_bindings)`).Scan(&tokens, &bindings)
	if err != nil {
		return 0, 0, fmt.Errorf("count credentials: %w", dbError(err))
	}
	return tokens, bindings, nil
}
