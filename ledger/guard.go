package ledger

import (
	"context"
	"time"
)

// guardRow is what the guarded statements (Complete, Fail, Release) return:
// either the changed row, or the entry as it is when the guard did not match.
type guardRow struct {
	Changed      bool       `db:"changed"`
	State        State      `db:"state"`
	FencingToken int64      `db:"fencing_token"`
	FinishedAt   *time.Time `db:"finished_at"`
	Same         bool       `db:"same"`
}

// guardedUpdate runs a statement that changes a leased entry under its
// fencing token into finalState, and tells the outcomes apart (see
// judgeGuarded). A refusal for a stale token is recorded in the audit
// trail, with q.
func (s *Store) guardedUpdate(ctx context.Context, q querier, operation, namespace, key string, token int64, finalState func(State) bool, sql string, args ...any) (row guardRow, already bool, err error) {
	return s.guarded(ctx, q, operation, namespace, key, token, finalState, func() (*guardRow, error) {
		return queryOne[guardRow](ctx, q, sql, args...)
	})
}

// guarded is guardedUpdate with the statement run by run, which returns
// nil when the key has no entry. It runs again after a race.
func (s *Store) guarded(ctx context.Context, q querier, operation, namespace, key string, token int64, finalState func(State) bool, run func() (*guardRow, error)) (guardRow, bool, error) {
	type outcome struct {
		row     guardRow
		already bool
	}
	result, err := retryRaces(ctx, func() (outcome, error) {
		found, err := run()
		if err != nil {
			return outcome{}, err
		}
		row, already, err := s.judgeGuarded(ctx, q, operation, namespace, key, token, finalState, found)
		return outcome{row: row, already: already}, err
	})
	return result.row, result.already, err
}

// judgeGuarded tells apart the outcomes of a guarded statement, from the
// row it returned (nil: no entry):
//   - the guard matched: the change is made (already == false);
//   - the key is already in finalState under this token with the same
//     result or error: a retry after a lost response (already == true);
//   - the same, with a different result or error: ErrResultConflict;
//   - the row shows the lease under this token, unchanged: a concurrent
//     change committed after the statement's snapshot: errRaced;
//   - any other token or state, or no entry: ErrLeaseLost. A refusal of an
//     existing key is recorded in the audit trail, with q.
func (s *Store) judgeGuarded(ctx context.Context, q querier, operation, namespace, key string, token int64, finalState func(State) bool, row *guardRow) (guardRow, bool, error) {
	refuse := func() (guardRow, bool, error) {
		if err := s.recordRefusal(ctx, q, EventRefusedStaleToken, namespace, key, operation, token, ""); err != nil {
			return guardRow{}, false, err
		}
		return guardRow{}, false, ErrLeaseLost
	}
	switch {
	case row == nil:
		return guardRow{}, false, ErrLeaseLost
	case row.Changed:
		return *row, false, nil
	case row.FencingToken != token:
		return refuse()
	case row.State == StateLeased:
		return guardRow{}, false, errRaced
	case finalState(row.State) && row.Same:
		return *row, true, nil
	case finalState(row.State):
		return guardRow{}, false, ErrResultConflict
	default:
		return refuse()
	}
}

// is returns a test for the state want.
func is(want State) func(State) bool { return func(got State) bool { return got == want } }
