package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// parseDuration reads a Go duration ("90s", "1h30m") or a whole number of
// days ("7d").
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > int64(^uint64(0)>>1)/int64(24*time.Hour) {
			return 0, fmt.Errorf("%q: want a duration like 90s, 1h30m or 7d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want a duration like 90s, 1h30m or 7d", s)
	}
	return d, nil
}

// durationFlag is a duration flag that also reads days ("7d").
type durationFlag struct{ d time.Duration }

func (f *durationFlag) String() string {
	if f == nil || f.d == 0 {
		return ""
	}
	return durationText(f.d)
}

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	if d <= 0 {
		return errors.New("must be positive")
	}
	f.d = d
	return nil
}

// timeFlag is a point in time given as RFC 3339 ("2025-03-01T12:00:00Z"), a
// date ("2025-03-01", midnight UTC), or a duration before now ("1h", "7d"),
// by this machine's clock.
type timeFlag struct {
	t   time.Time
	now func() time.Time
}

func (f *timeFlag) String() string {
	if f == nil || f.t.IsZero() {
		return ""
	}
	return f.t.UTC().Format(time.RFC3339Nano)
}

func (f *timeFlag) Set(s string) error {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		f.t = t
		return nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		f.t = t
		return nil
	}
	d, err := parseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q: want RFC 3339 (2025-03-01T12:00:00Z), a date (2025-03-01) or a duration ago (90m, 1h, 7d)", s)
	}
	now := time.Now
	if f.now != nil {
		now = f.now
	}
	f.t = now().Add(-d)
	return nil
}

// timestamp is the time given, or nil when the flag was not.
func (f *timeFlag) timestamp() *timestamppb.Timestamp {
	if f.t.IsZero() {
		return nil
	}
	return timestamppb.New(f.t)
}

// isSet reports whether the flag name was given on fs's command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// enumName normalises a state or kind as typed ("taken-over", "Leased")
// to the proto name's suffix ("TAKEN_OVER", "LEASED").
func enumName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
}

// parseStates reads --state: a comma-separated list of states; "" is none.
func parseStates(list string) ([]ledgerv1.State, error) {
	return parseEnums[ledgerv1.State]("state", list, "STATE_", ledgerv1.State_value, ledgerv1.State_name)
}

// parseKinds reads --kind: a comma-separated list of event kinds; "" is
// none.
func parseKinds(list string) ([]ledgerv1.EventKind, error) {
	return parseEnums[ledgerv1.EventKind]("kind", list, "EVENT_KIND_", ledgerv1.EventKind_value, ledgerv1.EventKind_name)
}

// parseEnums reads the flag --what: a comma-separated list of the values of
// an enum whose names start with prefix, typed with or without it, in any
// case, with - for _. "" is none; the enum's 0 (UNSPECIFIED) is not a value.
func parseEnums[E ~int32](what, list, prefix string, values map[string]int32, names map[int32]string) ([]E, error) {
	if list == "" {
		return nil, nil
	}
	var parsed []E
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimPrefix(enumName(name), prefix)
		value, ok := values[prefix+name]
		if !ok || value == 0 {
			return nil, usageErrorf("--%s: unknown %s %q; want %s", what, what, name, enumChoices(names, prefix))
		}
		parsed = append(parsed, E(value))
	}
	return parsed, nil
}

// enumChoices lists an enum's values, lower case without prefix, in number
// order.
func enumChoices(names map[int32]string, prefix string) string {
	choices := make([]string, 0, len(names))
	for i := int32(1); i < int32(len(names)); i++ {
		choices = append(choices, strings.ToLower(strings.TrimPrefix(names[i], prefix)))
	}
	return strings.Join(choices, ",")
}

// reasonFlag registers --reason, which every admin action needs: it is
// recorded in the audit trail.
func reasonFlag(fs *flag.FlagSet, reason *string) {
	fs.StringVar(reason, "reason", "", "`TEXT` saying why, for the audit trail (required; at most 1024 bytes)")
}

// requireReason is a usage error when --reason is missing.
func requireReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return usageErrorf("--reason is required: it is recorded in the audit trail")
	}
	return nil
}

// limitFlag registers --limit.
func limitFlag(fs *flag.FlagSet, limit *int, what string) {
	fs.IntVar(limit, "limit", 0, "show at most `N` "+what+"; 0 shows all (a note on stderr says when more were left)")
}
