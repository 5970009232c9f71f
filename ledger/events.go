package ledger

import (
	"context"
	"time"
)

// EventKind is what an audit event records; the strings are stored in the
// events table.
type EventKind string

// The kinds of audit events. See the EventKind enum of ledger.proto for the
// detail each carries.
const (
	EventReserved           EventKind = "reserved"
	EventTakenOver          EventKind = "taken_over" // a grant of a released key
	EventReclaimed          EventKind = "reclaimed"  // a grant of a key whose lease had expired
	EventHeartbeat          EventKind = "heartbeat"  // sampled (Config.HeartbeatEventInterval)
	EventCompleted          EventKind = "completed"
	EventFailed             EventKind = "failed"
	EventReleased           EventKind = "released"
	EventPurged             EventKind = "purged"
	EventRefusedStaleToken  EventKind = "refused_stale_token"
	EventRefusedFingerprint EventKind = "refused_fingerprint"
	EventForceReleased      EventKind = "force_released"
	EventReset              EventKind = "reset"
	EventNamespaceChanged   EventKind = "namespace_changed" // by an admin: created or changed
	EventNamespaceCreated   EventKind = "namespace_created" // by its first Reserve, with the server's defaults

	// Platform events (namespace and key empty).

	EventTokenCreated EventKind = "token_created"
	EventTokenRevoked EventKind = "token_revoked"
	EventRoleGranted  EventKind = "role_granted"
	EventRoleRevoked  EventKind = "role_revoked"
	// EventCredentialRefused: a revoked or expired token was presented with
	// its right secret (at most one event per token per minute per replica).
	EventCredentialRefused EventKind = "credential_refused"
	// EventRestoreFenced: an operator raised the fencing epoch of a restored
	// backup (Store.RestoreFence).
	EventRestoreFenced EventKind = "restore_fenced"
)

// Event is one row of the append-only audit trail.
type Event struct {
	ID           int64          `db:"id"`
	Namespace    string         `db:"namespace"`
	Key          string         `db:"key"` // empty for namespace events
	Kind         EventKind      `db:"kind"`
	FencingToken int64          `db:"fencing_token"`
	Owner        string         `db:"owner"`
	Attempt      int32          `db:"attempt"`
	Caller       string         `db:"caller"`
	Detail       map[string]any `db:"detail"`
	At           time.Time      `db:"at"`
}

// recordRefusal writes the audit event of a call refused because its
// fencing token is stale (or, for a Reserve, because its fingerprint
// differs). It writes nothing for a key without an entry.
func (s *Store) recordRefusal(ctx context.Context, q querier, kind EventKind, namespace, key, operation string, token int64, owner string) error {
	_, err := q.Exec(ctx, query("event_refusal"), namespace, key, string(kind), operation, token, owner, callerFrom(ctx))
	return dbError(err)
}
