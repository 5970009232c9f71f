package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// EpochShift places the fencing epoch in a token: every token granted in
// epoch E is at least E << EpochShift, and a key's grants within one epoch
// count up from there. A key would need 2^38 (about 2.7 * 10^11) grants in
// one epoch to reach the next epoch's floor; the epoch itself stays below
// 2^25, so that tokens fit in PostgreSQL's bigint. See
// migrations/00010_fencing_epoch.sql.
const EpochShift = 38

// TokenEpoch returns the fencing epoch a token was granted in. A sink that
// stores the highest token it accepted per key can tell, when a new token's
// epoch is higher than the stored one's, that the ledger was restored from
// a backup since: the work for that key may have run, and had its effect,
// after the backup (see Store.RestoreFence).
func TokenEpoch(fencingToken int64) int64 { return fencingToken >> EpochShift }

// RestoreFence is what Store.RestoreFence did, and the restored backup's
// high-water marks.
type RestoreFence struct {
	// PreviousEpoch is the epoch the restored backup held; Epoch the one it
	// holds now.
	PreviousEpoch int64 `db:"previous_epoch"`
	Epoch         int64 `db:"epoch"`
	// TokenFloor is Epoch << EpochShift: every token granted from now on is
	// at least this, above every token granted before the restore.
	TokenFloor int64 `db:"token_floor"`
	// LeasesEnded counts the leases the backup held, which were ended (each
	// with a force_released event) so that no holder from before the restore
	// keeps a token of the old epoch.
	LeasesEnded int64 `db:"leases_ended"`
	// BackupLastEventID and BackupLastEventAt identify the backup's last
	// event (0 and the zero time for a backup without events): what happened
	// after it is not in the restored ledger.
	BackupLastEventID int64      `db:"backup_last_event_id"`
	BackupLastEventAt *time.Time `db:"backup_last_event_at"`
	// BackupMaxToken is the highest token an entry of the backup held.
	BackupMaxToken int64 `db:"backup_max_token"`
	// FencedAt is when the fence was recorded, by the database's clock.
	FencedAt time.Time `db:"fenced_at"`
}

// RestoreFence raises the fencing epoch of a database restored from a
// backup, before any replica serves it, so that every token granted after
// the restore is above every token granted before it, the tokens granted
// after the backup (which the restored database never saw) included: a
// sink that refuses tokens lower than the last one it accepted accepts the
// restored ledger's grants. It also ends every lease the backup held,
// writes a force_released event for each and one restore_fenced platform
// event with the reason and the backup's high-water marks, all in one
// transaction.
//
// Run it once per restore. Running it again on a database that served
// meanwhile is safe (tokens only grow) but needless. A replica serving the
// database while it runs is fenced too: the grant statements read the epoch
// themselves, and RestoreFence locks it so that no grant that read the old
// one commits after it. The reason is required (at most
// Limits.MaxReasonBytes).
func (s *Store) RestoreFence(ctx context.Context, reason string) (RestoreFence, error) {
	if err := checkReason(s.limits, reason); err != nil {
		return RestoreFence{}, fmt.Errorf("restore-fence: %w", err)
	}
	var fence RestoreFence
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Waits for the grants in flight (each holds ACCESS SHARE on the
		// table until it commits) and holds back new ones until this
		// commits: a grant never commits a token below the new floor after
		// the fence.
		if _, err := tx.Exec(ctx, `LOCK TABLE fencing_epoch IN ACCESS EXCLUSIVE MODE`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, query("restore_fence"), reason, callerFrom(ctx))
		if err != nil {
			return err
		}
		fence, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[RestoreFence])
		return err
	})
	if err != nil {
		return RestoreFence{}, fmt.Errorf("restore-fence: %w", dbError(err))
	}
	return fence, nil
}

// FencingEpoch returns the database's current fencing epoch (0 until the
// first RestoreFence).
func (s *Store) FencingEpoch(ctx context.Context) (int64, error) {
	var epoch int64
	if err := s.pool.QueryRow(ctx, `SELECT epoch FROM fencing_epoch`).Scan(&epoch); err != nil {
		return 0, fmt.Errorf("read the fencing epoch: %w", dbError(err))
	}
	return epoch, nil
}
