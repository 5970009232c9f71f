package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// jsonOptions print the proto field names (fencing_token, not
// fencingToken), so that scripts see the names of the .proto files, and
// every field, so that an object's shape does not depend on its values.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// writeJSON prints m as one line of JSON. protojson's output varies its
// whitespace on purpose; compacting it makes ledgerctl's output
// byte-for-byte stable, for diffs and tests.
func writeJSON(w io.Writer, m proto.Message) error {
	raw, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	var line bytes.Buffer
	if err := json.Compact(&line, raw); err != nil {
		return err
	}
	line.WriteByte('\n')
	_, err = w.Write(line.Bytes())
	return err
}

// newTable returns a tabwriter for aligned columns; Flush it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// row writes one line of tab-separated cells.
func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// timeLayout is RFC 3339 in UTC with milliseconds, so that events of the
// same second keep their order and the column keeps its width.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// formatTime shows a timestamp in UTC, or "-" when it is unset.
func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(timeLayout)
}

// formatDuration shows a duration the way ledgerctl reads them: whole days
// as "7d", others as Go does without zero units ("1h30m", "30s").
func formatDuration(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return durationText(d.AsDuration())
}

func durationText(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// maxBytesShown bounds a byte field in a table; -o json shows it whole.
const maxBytesShown = 256

// formatBytes shows bytes as text when they are printable UTF-8, otherwise
// as "base64:" and their standard base64; "-" when empty. Long values are
// cut, with their length.
func formatBytes(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	text := isPrintable(string(b)) && !bytes.HasPrefix(b, []byte("base64:"))
	shown := b
	if len(shown) > maxBytesShown {
		shown = shown[:maxBytesShown]
		for text && !utf8.Valid(shown) { // do not cut a character in half
			shown = shown[:len(shown)-1]
		}
	}
	s := string(shown)
	if !text {
		s = "base64:" + base64.StdEncoding.EncodeToString(shown)
	}
	if len(shown) < len(b) {
		s += fmt.Sprintf("... (%d bytes; -o json shows all)", len(b))
	}
	return s
}

// isPrintable reports whether s is valid UTF-8 made of printable
// characters only (spaces allowed; tabs and newlines not).
func isPrintable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// formatText shows a string in a table: as is when printable and not
// empty, quoted otherwise, "-" when empty.
func formatText(s string) string {
	switch {
	case s == "":
		return "-"
	case isPrintable(s) && !strings.ContainsAny(s, "\"") && s != "-":
		return s
	default:
		return strconv.Quote(s)
	}
}

// formatPairValue shows a value in key=value pairs: quoted when it has
// spaces, quotes, separators or unprintable characters.
func formatPairValue(s string) string {
	if s != "" && isPrintable(s) && !strings.ContainsAny(s, " \",=") {
		return s
	}
	return strconv.Quote(s)
}

// formatPairs shows a map as "k=v k2=v2", sorted by key, each value as
// value shows it; "-" when empty.
func formatPairs[V any](m map[string]V, value func(V) string) string {
	if len(m) == 0 {
		return "-"
	}
	pairs := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		pairs = append(pairs, formatPairValue(k)+"="+value(m[k]))
	}
	return strings.Join(pairs, " ")
}

// formatDetail shows an event's detail as sorted key=value pairs.
func formatDetail(detail *structpb.Struct) string {
	return formatPairs(detail.GetFields(), formatValue)
}

func formatValue(v *structpb.Value) string {
	switch kind := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return formatPairValue(kind.StringValue)
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(kind.NumberValue, 'f', -1, 64)
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(kind.BoolValue)
	case *structpb.Value_NullValue, nil:
		return "null"
	default:
		raw, err := protojson.Marshal(v)
		if err != nil {
			return "?"
		}
		var compact bytes.Buffer
		if json.Compact(&compact, raw) != nil {
			return string(raw)
		}
		return compact.String()
	}
}

// stateName is a State without its prefix: LEASED, COMPLETED...
func stateName(s ledgerv1.State) string {
	return strings.TrimPrefix(s.String(), "STATE_")
}

// kindName is an EventKind without its prefix: RESERVED, TAKEN_OVER...
func kindName(k ledgerv1.EventKind) string {
	return strings.TrimPrefix(k.String(), "EVENT_KIND_")
}

// formatToken shows a fencing token; "-" for none.
func formatToken(token int64) string {
	if token == 0 {
		return "-"
	}
	return strconv.FormatInt(token, 10)
}

// writeEntry shows an entry as key/value lines.
func writeEntry(w io.Writer, e *ledgerv1.Entry) error {
	t := newTable(w)
	row(t, "namespace", e.GetNamespace())
	row(t, "key", formatText(e.GetKey()))
	state := stateName(e.GetState())
	if e.GetLeaseExpired() {
		state += " (lease expired)"
	}
	row(t, "state", state)
	if e.GetState() == ledgerv1.State_STATE_PURGED {
		// A purged key keeps only its last holder and token, and when it
		// went; its history (get --history) tells the rest.
		row(t, "owner", formatText(e.GetOwner()))
		row(t, "fencing_token", formatToken(e.GetFencingToken()))
		row(t, "purged_at", formatTime(e.GetPurgedAt()))
		return t.Flush()
	}
	row(t, "owner", formatText(e.GetOwner()))
	row(t, "fencing_token", formatToken(e.GetFencingToken()))
	row(t, "lease_expires_at", formatTime(e.GetLeaseExpiresAt()))
	row(t, "attempts", strconv.Itoa(int(e.GetAttempts())))
	row(t, "fingerprint", formatBytes(e.GetFingerprint()))
	row(t, "result", formatBytes(e.GetResult()))
	row(t, "error", formatWorkError(e.GetError()))
	row(t, "checkpoint", formatBytes(e.GetCheckpoint()))
	row(t, "metadata", formatPairs(e.GetMetadata(), formatPairValue))
	row(t, "created_at", formatTime(e.GetCreatedAt()))
	row(t, "updated_at", formatTime(e.GetUpdatedAt()))
	row(t, "finished_at", formatTime(e.GetFinishedAt()))
	row(t, "expires_at", formatTime(e.GetExpiresAt()))
	return t.Flush()
}

func formatWorkError(e *ledgerv1.WorkError) string {
	if e == nil {
		return "-"
	}
	if e.GetCode() == "" {
		return formatText(e.GetMessage())
	}
	return formatText(e.GetCode() + ": " + e.GetMessage())
}

// entriesHeader and entryRow are the columns of `list`.
var entriesHeader = []string{"KEY", "STATE", "OWNER", "TOKEN", "ATTEMPTS", "UPDATED_AT", "LEASE_EXPIRES_AT"}

func entryRow(e *ledgerv1.Entry) []string {
	lease := formatTime(e.GetLeaseExpiresAt())
	if e.GetLeaseExpired() {
		lease += " (expired)"
	}
	return []string{
		formatText(e.GetKey()),
		stateName(e.GetState()),
		formatText(e.GetOwner()),
		formatToken(e.GetFencingToken()),
		strconv.Itoa(int(e.GetAttempts())),
		formatTime(e.GetUpdatedAt()),
		lease,
	}
}

// eventsHeader and eventRow are the columns of `events` and `history`;
// withKey adds the key (events of a namespace).
func eventsHeader(withKey bool) []string {
	if withKey {
		return []string{"ID", "AT", "KEY", "KIND", "TOKEN", "OWNER", "ATTEMPT", "CALLER", "DETAIL"}
	}
	return []string{"ID", "AT", "KIND", "TOKEN", "OWNER", "ATTEMPT", "CALLER", "DETAIL"}
}

func eventRow(e *ledgerv1.Event, withKey bool) []string {
	cells := []string{strconv.FormatInt(e.GetId(), 10), formatTime(e.GetAt())}
	if withKey {
		cells = append(cells, formatText(e.GetKey()))
	}
	return append(cells,
		kindName(e.GetKind()),
		formatToken(e.GetFencingToken()),
		formatText(e.GetOwner()),
		strconv.Itoa(int(e.GetAttempt())),
		formatText(e.GetCaller()),
		formatDetail(e.GetDetail()),
	)
}

// writeNamespace shows a namespace's settings, and its usage when given, as
// key/value lines.
func writeNamespace(w io.Writer, n *ledgerv1.Namespace, usage *ledgerv1.NamespaceUsage) error {
	t := newTable(w)
	row(t, "name", n.GetName())
	row(t, "default_lease_ttl", formatDuration(n.GetDefaultLeaseTtl()))
	row(t, "max_lease_ttl", formatDuration(n.GetMaxLeaseTtl()))
	row(t, "max_result_bytes", strconv.Itoa(int(n.GetMaxResultBytes())))
	row(t, "retention", formatDuration(n.GetRetention()))
	row(t, "max_attempts", formatMaxAttempts(n.GetMaxAttempts()))
	row(t, "event_retention", formatDuration(n.GetEventRetention()))
	row(t, "max_held_leases", formatQuota(n.GetMaxHeldLeases()))
	row(t, "max_stored_bytes", formatQuota(n.GetMaxStoredBytes()))
	if usage != nil {
		row(t, "held_leases", strconv.FormatInt(usage.GetHeldLeases(), 10))
		stored := "not counted (no max_stored_bytes)"
		if usage.StoredBytes != nil {
			stored = strconv.FormatInt(usage.GetStoredBytes(), 10)
		}
		row(t, "stored_bytes", stored)
	}
	row(t, "created_at", formatTime(n.GetCreatedAt()))
	row(t, "updated_at", formatTime(n.GetUpdatedAt()))
	return t.Flush()
}

func formatMaxAttempts(n int32) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.Itoa(int(n))
}

func formatQuota(n int64) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

// namespacesHeader and namespaceRow are the columns of `namespaces list`.
var namespacesHeader = []string{"NAME", "DEFAULT_LEASE_TTL", "MAX_LEASE_TTL", "MAX_RESULT_BYTES", "RETENTION", "MAX_ATTEMPTS", "EVENT_RETENTION", "MAX_HELD_LEASES", "MAX_STORED_BYTES", "UPDATED_AT"}

func namespaceRow(n *ledgerv1.Namespace) []string {
	return []string{
		n.GetName(),
		formatDuration(n.GetDefaultLeaseTtl()),
		formatDuration(n.GetMaxLeaseTtl()),
		strconv.Itoa(int(n.GetMaxResultBytes())),
		formatDuration(n.GetRetention()),
		formatMaxAttempts(n.GetMaxAttempts()),
		formatDuration(n.GetEventRetention()),
		formatQuota(n.GetMaxHeldLeases()),
		formatQuota(n.GetMaxStoredBytes()),
		formatTime(n.GetUpdatedAt()),
	}
}
