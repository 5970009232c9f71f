package ledger

import (
	"bytes"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits bound every request field. They are checked before the database is
// touched; a violation is a *ValidationError naming the field and the limit.
// Zero fields take their defaults.
type Limits struct {
	// MaxKeyBytes bounds the key. Defaults to 512.
	MaxKeyBytes int
	// MaxOwnerBytes bounds the owner. Defaults to 256.
	MaxOwnerBytes int
	// MaxFingerprintBytes bounds the fingerprint. Defaults to 256.
	MaxFingerprintBytes int
	// MaxMetadataBytes bounds the metadata keys and values added up.
	// Defaults to 8192.
	MaxMetadataBytes int
	// MaxMetadataPairs bounds the number of metadata pairs. Defaults to 64.
	MaxMetadataPairs int
	// MaxCheckpointBytes bounds a Heartbeat's checkpoint. Defaults to 65536.
	MaxCheckpointBytes int
	// MaxErrorBytes bounds a Fail's error message. Defaults to 8192.
	MaxErrorBytes int
	// MinLeaseTTL is the shortest lease a caller may ask for. Defaults to 1s.
	MinLeaseTTL time.Duration
	// MaxWait caps a Reserve's WaitTimeout; longer waits are shortened to
	// it. Defaults to 60s.
	MaxWait time.Duration
	// MaxResultBytes is the ceiling of every namespace's maximum result size
	// (the gRPC message limit is sized from it). Defaults to 16 MiB.
	MaxResultBytes int
	// MaxReasonBytes bounds an admin action's reason. Defaults to 1024.
	MaxReasonBytes int
	// MaxBatchItems bounds the items of one ReserveBatch, CompleteBatch or
	// LookupBatch. Defaults to 1000.
	MaxBatchItems int
	// MaxRetention is the ceiling of every namespace's retention, which
	// binds platform admins too. Defaults to 365 days.
	MaxRetention time.Duration
	// MinEventRetention is the floor of every namespace's event retention:
	// a namespace cannot be set below it, and the sweeper keeps a stored
	// namespace's events at least this long whatever its setting says (a
	// row written before the floor existed). Defaults to 7 days.
	MinEventRetention time.Duration
	// MaxEventRetention is the ceiling of every namespace's event
	// retention, so that no tenant keeps its events without bound. It must
	// not be below MaxRetention (event retention must be at least the
	// retention). Defaults to 730 days.
	MaxEventRetention time.Duration
}

// The fixed limits: they are part of the API, not of the configuration.
const (
	// MaxNamespaceBytes bounds a namespace name.
	MaxNamespaceBytes = 128
	// MaxErrorCodeBytes bounds a WorkError's code.
	MaxErrorCodeBytes = 128
	// MaxMetadataKeyBytes bounds one metadata key.
	MaxMetadataKeyBytes = 128
)

// DefaultLimits returns the limits used for zero fields.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:         512,
		MaxOwnerBytes:       256,
		MaxFingerprintBytes: 256,
		MaxMetadataBytes:    8 << 10,
		MaxMetadataPairs:    64,
		MaxCheckpointBytes:  64 << 10,
		MaxErrorBytes:       8 << 10,
		MinLeaseTTL:         time.Second,
		MaxWait:             time.Minute,
		MaxResultBytes:      16 << 20,
		MaxReasonBytes:      1024,
		MaxBatchItems:       1000,
		MaxRetention:        365 * 24 * time.Hour,
		MinEventRetention:   7 * 24 * time.Hour,
		MaxEventRetention:   730 * 24 * time.Hour,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	setDefault(&l.MaxKeyBytes, d.MaxKeyBytes)
	setDefault(&l.MaxOwnerBytes, d.MaxOwnerBytes)
	setDefault(&l.MaxFingerprintBytes, d.MaxFingerprintBytes)
	setDefault(&l.MaxMetadataBytes, d.MaxMetadataBytes)
	setDefault(&l.MaxMetadataPairs, d.MaxMetadataPairs)
	setDefault(&l.MaxCheckpointBytes, d.MaxCheckpointBytes)
	setDefault(&l.MaxErrorBytes, d.MaxErrorBytes)
	setDefault(&l.MinLeaseTTL, d.MinLeaseTTL)
	setDefault(&l.MaxWait, d.MaxWait)
	setDefault(&l.MaxResultBytes, d.MaxResultBytes)
	setDefault(&l.MaxReasonBytes, d.MaxReasonBytes)
	setDefault(&l.MaxBatchItems, d.MaxBatchItems)
	setDefault(&l.MaxRetention, d.MaxRetention)
	setDefault(&l.MinEventRetention, d.MinEventRetention)
	setDefault(&l.MaxEventRetention, d.MaxEventRetention)
	return l
}

func (l Limits) validate() error {
	for name, v := range map[string]int{
		"MaxKeyBytes": l.MaxKeyBytes, "MaxOwnerBytes": l.MaxOwnerBytes,
		"MaxFingerprintBytes": l.MaxFingerprintBytes, "MaxMetadataBytes": l.MaxMetadataBytes,
		"MaxMetadataPairs": l.MaxMetadataPairs, "MaxCheckpointBytes": l.MaxCheckpointBytes,
		"MaxErrorBytes": l.MaxErrorBytes, "MaxResultBytes": l.MaxResultBytes, "MaxReasonBytes": l.MaxReasonBytes, "MaxBatchItems": l.MaxBatchItems,
	} {
		if v < 1 {
			return fmt.Errorf("limits: %s must be positive, got %d", name, v)
		}
	}
	if l.MinLeaseTTL < time.Millisecond {
		return fmt.Errorf("limits: MinLeaseTTL must be at least 1ms, got %s", l.MinLeaseTTL)
	}
	if l.MaxWait < 0 {
		return fmt.Errorf("limits: MaxWait must not be negative, got %s", l.MaxWait)
	}
	for name, d := range map[string]time.Duration{
		"MaxRetention": l.MaxRetention, "MinEventRetention": l.MinEventRetention, "MaxEventRetention": l.MaxEventRetention,
	} {
		if d < time.Millisecond {
			return fmt.Errorf("limits: %s must be at least 1ms (retention is stored in milliseconds), got %s", name, d)
		}
	}
	switch {
	case l.MaxEventRetention < l.MinEventRetention:
		return fmt.Errorf("limits: MaxEventRetention %s is below MinEventRetention %s", l.MaxEventRetention, l.MinEventRetention)
	case l.MaxEventRetention < l.MaxRetention:
		return fmt.Errorf("limits: MaxEventRetention %s is below MaxRetention %s: a namespace's event retention must be at least its retention", l.MaxEventRetention, l.MaxRetention)
	}
	return nil
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// checkNamespace enforces the namespace format: 1 to 128 bytes of ASCII
// letters, digits, '.', '_' and '-', starting with a letter or a digit. The
// narrow alphabet keeps names safe in logs, metrics labels and patterns.
func checkNamespace(namespace string) error {
	if namespace == "" {
		return invalid("namespace", "is required")
	}
	if len(namespace) > MaxNamespaceBytes {
		return invalid("namespace", "must be at most %d bytes, got %d", MaxNamespaceBytes, len(namespace))
	}
	for i := range len(namespace) {
		c := namespace[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("._-", rune(c))) {
			return invalid("namespace", "must match [A-Za-z0-9][A-Za-z0-9._-]*, found %q at byte %d", c, i)
		}
	}
	return nil
}

// checkText enforces a UTF-8 string without NUL bytes (PostgreSQL text
// cannot hold them) of at most maxBytes, and not empty when required.
func checkText(field, value string, required bool, maxBytes int) error {
	switch {
	case value == "" && required:
		return invalid(field, "is required")
	case len(value) > maxBytes:
		return invalid(field, "must be at most %d bytes, got %d", maxBytes, len(value))
	case !utf8.ValidString(value):
		return invalid(field, "must be valid UTF-8")
	case strings.IndexByte(value, 0) >= 0:
		return invalid(field, "must not contain NUL bytes")
	}
	return nil
}

// checkBytes enforces at most maxBytes bytes.
func checkBytes(field string, value []byte, maxBytes int) error {
	if len(value) > maxBytes {
		return invalid(field, "must be at most %d bytes, got %d", maxBytes, len(value))
	}
	return nil
}

func checkKey(l Limits, namespace, key string) error {
	if err := checkNamespace(namespace); err != nil {
		return err
	}
	return checkText("key", key, true, l.MaxKeyBytes)
}

func checkFencingToken(token int64) error {
	if token < 1 {
		return invalid("fencing_token", "must be positive, got %d", token)
	}
	return nil
}

func checkMetadata(l Limits, metadata map[string]string) error {
	if len(metadata) > l.MaxMetadataPairs {
		return invalid("metadata", "must have at most %d pairs, got %d", l.MaxMetadataPairs, len(metadata))
	}
	total := 0
	for k, v := range metadata {
		if err := checkText("metadata key", k, true, MaxMetadataKeyBytes); err != nil {
			return err
		}
		if err := checkText("metadata value", v, false, l.MaxMetadataBytes); err != nil {
			return err
		}
		total += len(k) + len(v)
	}
	if total > l.MaxMetadataBytes {
		return invalid("metadata", "keys and values must add up to at most %d bytes, got %d", l.MaxMetadataBytes, total)
	}
	return nil
}

func checkWorkError(l Limits, workErr *WorkError) error {
	if workErr == nil {
		return invalid("error", "is required")
	}
	if err := checkText("error.code", workErr.Code, false, MaxErrorCodeBytes); err != nil {
		return err
	}
	return checkText("error.message", workErr.Message, true, l.MaxErrorBytes)
}

// leaseTTL resolves a requested lease duration (zero means the namespace
// default) and checks it against the bounds.
func (l Limits) leaseTTL(requested time.Duration, ns NamespaceSettings) (time.Duration, error) {
	switch {
	case requested == 0:
		return ns.DefaultLeaseTTL, nil
	case requested < l.MinLeaseTTL:
		return 0, invalid("lease_ttl", "must be at least %s, got %s", l.MinLeaseTTL, requested)
	case requested > ns.MaxLeaseTTL:
		return 0, invalid("lease_ttl", "must be at most %s (the namespace maximum), got %s", ns.MaxLeaseTTL, requested)
	}
	return requested, nil
}

func sameFingerprint(stored, requested []byte) bool { return bytes.Equal(stored, requested) }
