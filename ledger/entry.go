package ledger

import (
	"fmt"
	"time"
)

// State is where a key is in its life. See docs/design.md, "State machine".
type State string

// The states of an entry, as stored in the entries table.
const (
	// StateLeased: an owner holds (or held, if the lease ran out) a lease.
	StateLeased State = "leased"
	// StateCompleted: the work is done and its result is stored.
	StateCompleted State = "completed"
	// StateFailed: the work failed permanently and its error is stored.
	StateFailed State = "failed"
	// StateReleased: the lease was given up; the next Reserve acquires it.
	StateReleased State = "released"
	// StatePurged: retention removed the entry. Never stored: Lookup reports
	// it for a key whose purged event is still kept.
	StatePurged State = "purged"
)

// WorkError is the failure a worker records with Fail.
type WorkError struct {
	// Code is an optional machine-readable classification, at most 128 bytes.
	Code string
	// Message is the human-readable description; required.
	Message string
}

// Error returns "code: message", or the message alone.
func (e *WorkError) Error() string {
	if e.Code == "" {
		return e.Message
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Entry is the ledger's record of one key, as Lookup returns it.
type Entry struct {
	Namespace    string
	Key          string
	State        State
	Owner        string // the current or last holder
	FencingToken int64  // the token of the current or last grant
	// LeaseExpiresAt is set while the state is StateLeased.
	LeaseExpiresAt time.Time
	// LeaseExpired is true when the state is StateLeased and the lease ran
	// out by the database's clock.
	LeaseExpired bool
	Attempts     int // the number of grants
	Fingerprint  []byte
	Result       []byte     // set when StateCompleted
	Error        *WorkError // the last recorded failure, if any
	Checkpoint   []byte
	Metadata     map[string]string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	FinishedAt   time.Time // set when StateCompleted or StateFailed
	// ExpiresAt is when retention removes a completed or failed entry.
	ExpiresAt time.Time
	// PurgedAt is set, with StatePurged, for a key that retention removed
	// (Lookup reports it from the key's purged event).
	PurgedAt time.Time
}

// entryRow is an entries row as the queries return it, plus the lease
// figures computed by the database in the same statement. It is turned into
// domain types at one boundary, toEntry.
type entryRow struct {
	Namespace        string            `db:"namespace"`
	Key              string            `db:"key"`
	State            State             `db:"state"`
	Owner            string            `db:"owner"`
	FencingToken     int64             `db:"fencing_token"`
	LeaseExpiresAt   *time.Time        `db:"lease_expires_at"`
	LeaseExpired     bool              `db:"lease_expired"`
	LeaseRemainingMS int64             `db:"lease_remaining_ms"`
	Attempts         int32             `db:"attempts"`
	Fingerprint      []byte            `db:"fingerprint"`
	Result           []byte            `db:"result"`
	ErrorCode        *string           `db:"error_code"`
	ErrorMessage     *string           `db:"error_message"`
	Checkpoint       []byte            `db:"checkpoint"`
	Metadata         map[string]string `db:"metadata"`
	CreatedAt        time.Time         `db:"created_at"`
	UpdatedAt        time.Time         `db:"updated_at"`
	FinishedAt       *time.Time        `db:"finished_at"`
	ExpiresAt        *time.Time        `db:"expires_at"`
}

func (r *entryRow) workError() *WorkError {
	if r.ErrorMessage == nil {
		return nil
	}
	workErr := &WorkError{Message: *r.ErrorMessage}
	if r.ErrorCode != nil {
		workErr.Code = *r.ErrorCode
	}
	return workErr
}

func (r *entryRow) toEntry() Entry {
	return Entry{
		Namespace:      r.Namespace,
		Key:            r.Key,
		State:          r.State,
		Owner:          r.Owner,
		FencingToken:   r.FencingToken,
		LeaseExpiresAt: derefTime(r.LeaseExpiresAt),
		LeaseExpired:   r.LeaseExpired,
		Attempts:       int(r.Attempts),
		Fingerprint:    r.Fingerprint,
		Result:         r.Result,
		Error:          r.workError(),
		Checkpoint:     r.Checkpoint,
		Metadata:       r.Metadata,
		CreatedAt:      r.CreatedAt,
		UpdatedAt:      r.UpdatedAt,
		FinishedAt:     derefTime(r.FinishedAt),
		ExpiresAt:      derefTime(r.ExpiresAt),
	}
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// emptyIfNil returns b, or an empty slice for nil: for the columns that are
// stored empty, never NULL.
func emptyIfNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// emptyMapIfNil returns m, or an empty map for nil (stored as '{}').
func emptyMapIfNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
