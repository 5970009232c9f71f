package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Page sizes of the listings.
const (
	// DefaultPageSize is the page size of a listing that asks for none.
	DefaultPageSize = 100
	// MaxPageSize bounds a listing's page size.
	MaxPageSize = 1000
)

// Page asks for one page of a listing.
type Page struct {
	// Size is the most items to return: 0 means DefaultPageSize; at most
	// MaxPageSize.
	Size int
	// Token continues a listing: the NextToken of the previous page, given
	// with the same filters. Empty starts from the beginning.
	Token string
}

// pageToken is the keyset position a page token encodes: the last item of
// the previous page. Tokens are opaque to callers (base64 of JSON).
type pageToken struct {
	Key string    `json:"k,omitempty"`
	ID  int64     `json:"i,omitempty"`
	At  time.Time `json:"t,omitzero"`
}

func (p Page) decode() (size int, token pageToken, err error) {
	size = p.Size
	switch {
	case size == 0:
		size = DefaultPageSize
	case size < 0 || size > MaxPageSize:
		return 0, pageToken{}, invalid("page_size", "must be between 1 and %d, got %d", MaxPageSize, size)
	}
	if p.Token == "" {
		return size, pageToken{}, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(p.Token)
	if err == nil {
		err = json.Unmarshal(raw, &token)
	}
	if err == nil && strings.IndexByte(token.Key, 0) >= 0 {
		// No key holds a NUL (PostgreSQL text cannot), so no token does:
		// this one was made up, and the database would refuse it.
		err = errors.New("NUL in the key")
	}
	if err != nil {
		return 0, pageToken{}, invalid("page_token", "is not a token this listing returned")
	}
	return size, token, nil
}

func (t pageToken) encode() string {
	raw, _ := json.Marshal(t) // a struct of strings, ints and times always marshals
	return base64.RawURLEncoding.EncodeToString(raw)
}

// EntryFilter selects the entries of a namespace that ListEntries returns.
// Zero fields do not filter.
type EntryFilter struct {
	Namespace     string
	States        []State
	Owner         string
	KeyPrefix     string
	UpdatedAfter  time.Time // inclusive
	UpdatedBefore time.Time // exclusive
	// Stuck keeps only leases that ran out, by the database's clock, and
	// that nobody reclaimed yet.
	Stuck bool
}

// ListEntries returns a page of a namespace's entries in key order, without
// their results, and the token of the next page (empty on the last one).
// It reads from Config.ReadPool when there is one, so the entries may lag
// the primary's. It fails with a *ValidationError or ErrUnavailable.
func (s *Store) ListEntries(ctx context.Context, filter EntryFilter, page Page) ([]Entry, string, error) {
	size, token, err := page.decode()
	if err == nil {
		err = checkEntryFilter(s.limits, filter)
	}
	if err == nil {
		err = s.requireNamespace(ctx, filter.Namespace)
	}
	if err != nil {
		return nil, "", fmt.Errorf("list entries of %s: %w", filter.Namespace, err)
	}
	var after, rangeEnd, states any // NULL unless set
	if token.Key != "" {
		after = token.Key
	}
	if end, ok := prefixEnd(filter.KeyPrefix); ok {
		rangeEnd = end
	}
	if len(filter.States) > 0 {
		names := make([]string, len(filter.States))
		for i, state := range filter.States {
			names[i] = string(state)
		}
		states = names
	}
	statement := query("list_entries")
	if filter.Stuck || (len(filter.States) == 1 && filter.States[0] == StateLeased) {
		statement = query("list_entries_leased")
	}
	var rows []entryRow
	err = s.reads.read(ctx, func(conn *pgxpool.Conn) (err error) {
		rows, err = queryRows[entryRow](ctx, conn, statement, filter.Namespace, after, filter.KeyPrefix,
			rangeEnd, states, filter.Owner, optionalTime(filter.UpdatedAfter), optionalTime(filter.UpdatedBefore),
			filter.Stuck, size+1)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list entries of %s: %w", filter.Namespace, err)
	}
	entries := make([]Entry, 0, min(len(rows), size))
	for i := range rows[:min(len(rows), size)] {
		entries = append(entries, rows[i].toEntry())
	}
	next := ""
	if len(rows) > size { // one more than asked: there is a next page
		next = pageToken{Key: entries[len(entries)-1].Key}.encode()
	}
	return entries, next, nil
}

func checkEntryFilter(l Limits, f EntryFilter) error {
	if err := checkNamespace(f.Namespace); err != nil {
		return err
	}
	for _, state := range f.States {
		switch state {
		case StateLeased, StateCompleted, StateFailed, StateReleased:
		default:
			return invalid("states", "must be leased, completed, failed or released, got %q", state)
		}
	}
	if err := checkText("owner", f.Owner, false, l.MaxOwnerBytes); err != nil {
		return err
	}
	if !f.UpdatedAfter.IsZero() && !f.UpdatedBefore.IsZero() && f.UpdatedBefore.Before(f.UpdatedAfter) {
		return invalid("updated_before", "must not be before updated_after")
	}
	return checkText("key_prefix", f.KeyPrefix, false, l.MaxKeyBytes)
}

// prefixEnd is the smallest string above every string that starts with
// prefix, in byte order (keys are collated "C"): prefix with its last rune
// incremented. ok is false when there is none (an empty prefix, or one made
// of U+10FFFF only).
func prefixEnd(prefix string) (end string, ok bool) {
	for prefix != "" {
		r, size := utf8.DecodeLastRuneInString(prefix)
		prefix = prefix[:len(prefix)-size]
		switch r {
		case utf8.MaxRune:
			continue // no rune above it: carry into the previous one
		case 0xD7FF:
			r = 0xE000 // skip the surrogates, which UTF-8 cannot encode
		default:
			r++
		}
		return prefix + string(r), true
	}
	return "", false
}

func optionalTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// GetHistory returns a page of one key's audit events, oldest first, and
// the token of the next page. It reads from Config.ReadPool when there is
// one, so the newest events may be missing. It fails with a
// *ValidationError or ErrUnavailable.
func (s *Store) GetHistory(ctx context.Context, namespace, key string, page Page) ([]Event, string, error) {
	size, token, err := page.decode()
	if err == nil {
		err = checkKey(s.limits, namespace, key)
	}
	if err == nil {
		err = s.requireNamespace(ctx, namespace)
	}
	if err != nil {
		return nil, "", fmt.Errorf("history of %s/%s: %w", namespace, key, err)
	}
	var events []Event
	err = s.reads.read(ctx, func(conn *pgxpool.Conn) (err error) {
		events, err = queryRows[Event](ctx, conn, query("get_history"), namespace, key, token.ID, size+1)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("history of %s/%s: %w", namespace, key, err)
	}
	if len(events) > size {
		events = events[:size]
		return events, pageToken{ID: events[size-1].ID}.encode(), nil
	}
	return events, "", nil
}

// EventFilter selects the events of a namespace that ListEvents returns.
type EventFilter struct {
	// Namespace whose events to list; empty lists the platform's events
	// (tokens and role bindings).
	Namespace string
	// Start keeps events at or after it; zero: from the oldest kept.
	Start time.Time
	// End keeps events before it; zero: up to now.
	End time.Time
	// Kinds keeps events of these kinds; empty keeps all.
	Kinds []EventKind
	// IncludeUnsettled lists the events of the last
	// Config.EventSettlingDelay too: the newest events, at the price that
	// an event committed later with an earlier time may be missing from
	// this listing and not returned by the next page either. For a look at
	// what just happened, not for an export that follows the log.
	IncludeUnsettled bool
}

// EventPage is a page of ListEvents.
type EventPage struct {
	// Events of this page, oldest first.
	Events []Event
	// NextPageToken gets the next page; empty on the last one.
	NextPageToken string
	// SettledUntil is where the listing stopped because newer events may
	// still be settling: events at or after it were left out. It is the
	// database's now minus Config.EventSettlingDelay; on a hot standby (the
	// read pool's, Config.ReadPool) the commit time of the last
	// transaction the standby has replayed minus the delay, if that is
	// earlier, so that it never passes an event the standby has not
	// replayed yet. Zero when nothing was left out for that reason
	// (IncludeUnsettled, an End before it, or no settling delay).
	SettledUntil time.Time
}

// ListEvents returns a page of a namespace's audit events in a time range,
// oldest first, and the token of the next page: the audit export. Unless
// filter.IncludeUnsettled, the events of the last
// Config.EventSettlingDelay are left out (EventPage.SettledUntil says from
// when), so that an export following the log with page tokens never skips
// an event that was still being committed, or, on the read pool's
// standby, not replayed yet. It reads from Config.ReadPool when there is
// one. It fails with a *ValidationError, ErrNotFound or ErrUnavailable.
func (s *Store) ListEvents(ctx context.Context, filter EventFilter, page Page) (EventPage, error) {
	events, err := s.listEvents(ctx, filter, page)
	if err != nil {
		return EventPage{}, fmt.Errorf("events of %s: %w", filter.Namespace, err)
	}
	return events, nil
}

func (s *Store) listEvents(ctx context.Context, filter EventFilter, page Page) (EventPage, error) {
	size, token, err := page.decode()
	if err == nil && filter.Namespace != "" { // empty: the platform's events
		err = checkNamespace(filter.Namespace)
	}
	if err == nil && !filter.End.IsZero() && filter.End.Before(filter.Start) {
		err = invalid("end_time", "must not be before start_time")
	}
	for _, kind := range filter.Kinds {
		if err == nil {
			// An unknown kind matches no event; one that is not text cannot
			// even be compared.
			err = checkText("kinds", string(kind), true, 128)
		}
	}
	if err == nil && filter.Namespace != "" {
		err = s.requireNamespace(ctx, filter.Namespace)
	}
	if err != nil {
		return EventPage{}, err
	}
	start, end := filter.Start, filter.End
	if end.IsZero() {
		end = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC) // "now": events are not written in the future
	}
	var afterAt, kinds any
	if !token.At.IsZero() {
		afterAt = token.At
	}
	if len(filter.Kinds) > 0 {
		names := make([]string, len(filter.Kinds))
		for i, kind := range filter.Kinds {
			names[i] = string(kind)
		}
		kinds = names
	}
	var result EventPage
	err = s.reads.read(ctx, func(conn *pgxpool.Conn) error {
		result = EventPage{}
		end := end
		if !filter.IncludeUnsettled && s.eventSettlingDelay > 0 {
			// Read before the listing, on the same connection (the same
			// server, whichever host of the URL it is), so that the
			// listing's snapshot is later and sees at least as much.
			settled, err := s.settledUntil(ctx, conn)
			if err != nil {
				return err
			}
			if settled.Before(end) {
				end, result.SettledUntil = settled, settled
			}
		}
		var err error
		result.Events, err = queryRows[Event](ctx, conn, eventsStatement(filter.Kinds), filter.Namespace, start, end, afterAt, token.ID, kinds, size+1)
		return err
	})
	if err != nil {
		return EventPage{}, err
	}
	if len(result.Events) > size {
		result.Events = result.Events[:size]
		last := result.Events[size-1]
		result.NextPageToken = pageToken{At: last.At, ID: last.ID}.encode()
	}
	return result, nil
}

// adminEventKinds are the kinds of the events that record admin actions:
// those the partial index events_admin_idx holds (migration 00011), and
// that event retention keeps for Config.AdminEventRetention
// (queries/delete_events.sql). The three lists must match.
var adminEventKinds = []EventKind{EventForceReleased, EventReset, EventNamespaceChanged, EventNamespaceCreated}

// eventsStatement returns the statement that lists events of kinds (none:
// any kind). When every one is an admin kind, it is list_events_admin.sql,
// which reads only the admin events through their partial index: a listing
// of the rare admin actions then reads what it returns, not every event of
// its time range.
func eventsStatement(kinds []EventKind) string {
	if len(kinds) == 0 {
		return query("list_events")
	}
	for _, kind := range kinds {
		if !slices.Contains(adminEventKinds, kind) {
			return query("list_events")
		}
	}
	return query("list_events_admin")
}

// settledUntil returns where a listing of events on conn's server must
// stop so that it never skips an event (see queries/events_settled.sql):
// the settling delay before the database's now, and on a hot standby
// before the last transaction it has replayed, if that is earlier. A
// standby that has replayed nothing since it started cannot say how far
// it is: errReadFromPrimary, and the primary answers.
func (s *Store) settledUntil(ctx context.Context, conn *pgxpool.Conn) (time.Time, error) {
	type settledRow struct {
		Standby  bool       `db:"standby"`
		ByClock  time.Time  `db:"by_clock"`
		ByReplay *time.Time `db:"by_replay"`
	}
	row, err := queryOne[settledRow](ctx, conn, query("events_settled"), s.eventSettlingDelay.Milliseconds())
	switch {
	case err != nil:
		return time.Time{}, err
	case !row.Standby:
		return row.ByClock, nil
	case row.ByReplay == nil:
		return time.Time{}, errReadFromPrimary
	}
	return minTime(row.ByClock, *row.ByReplay), nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
