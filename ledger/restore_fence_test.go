package ledger_test

import (
	"context"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// fencedSink is a downstream system that makes a step's effect exactly
// once with the ledger's fencing tokens, as pipelines.md tells sinks to:
// it keeps, per key, the highest token it accepted, and refuses a write
// with a token lower or equal. It lives in a schema of its own, so that it
// outlives the ledger's disaster and restore, as a real sink would.
type fencedSink struct{ pool *pgxpool.Pool }

func newFencedSink(t *testing.T) fencedSink {
	t.Helper()
	pool := pgtest.Pool(t)
	_, err := pool.Exec(context.Background(), `CREATE TABLE sink (
		key     text    PRIMARY KEY,
		token   bigint  NOT NULL,
		effects integer NOT NULL,
		-- an effect applied with a token of a later fencing epoch than the
		-- key's previous one: the key ran again after a restore of the ledger
		rerun_after_restore boolean NOT NULL DEFAULT false)`)
	require.NoError(t, err)
	return fencedSink{pool: pool}
}

// write applies the effect of key's work done under token, in one
// statement: it reports whether the sink accepted it, and whether it saw
// the key run again in a later epoch (a second effect to look at).
func (s fencedSink) write(t *testing.T, key string, token int64) (accepted, rerun bool) {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), `
		INSERT INTO sink AS s (key, token, effects) VALUES ($1, $2, 1)
		ON CONFLICT (key) DO UPDATE
		SET token = excluded.token, effects = s.effects + 1,
		    rerun_after_restore = s.rerun_after_restore OR (s.token >> $3) < (excluded.token >> $3)
		WHERE s.token < excluded.token
		RETURNING rerun_after_restore`, key, token, ledger.EpochShift)
	require.NoError(t, err)
	flags, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	require.NoError(t, err)
	if len(flags) == 0 {
		return false, false
	}
	return true, flags[0]
}

// maxToken is the highest token the sink ever accepted, of any key.
func (s fencedSink) maxToken(t *testing.T) int64 {
	t.Helper()
	var token int64
	require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT coalesce(max(token), 0) FROM sink`).Scan(&token))
	return token
}

// work is a worker's step for key: reserve, write to the sink under the
// token, complete. It returns the grant; the sink's answer is in accepted
// and rerun. A grant the sink refuses is released, as a worker would give
// up a lease it cannot use.
type work struct {
	token            int64
	accepted, rerun  bool
	completedAlready bool // the ledger replayed a finished key: nothing ran
}

func doWork(t *testing.T, store *ledger.Store, sink fencedSink, key, owner string) work {
	t.Helper()
	ctx := context.Background()
	r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "restore", Key: key, Owner: owner, LeaseTTL: time.Minute})
	require.NoError(t, err)
	if r.Outcome == ledger.Completed {
		return work{token: r.FencingToken, completedAlready: true}
	}
	require.Equal(t, ledger.Acquired, r.Outcome, "key %s", key)
	w := work{token: r.FencingToken}
	w.accepted, w.rerun = sink.write(t, key, r.FencingToken)
	if !w.accepted {
		_, err := store.Release(ctx, ledger.ReleaseRequest{Namespace: "restore", Key: key, FencingToken: r.FencingToken})
		require.NoError(t, err)
		return w
	}
	_, err = store.Complete(ctx, ledger.CompleteRequest{Namespace: "restore", Key: key, FencingToken: r.FencingToken, Result: []byte(owner)})
	require.NoError(t, err)
	return w
}

// ledgerBackup is a pg_dump of one test schema, restored with pg_restore:
// the logical backup of docs/operations.md, "Backup and restore".
type ledgerBackup struct {
	bindir, baseURL, schema, file string
}

func newLedgerBackup(t *testing.T, schemaURL string) ledgerBackup {
	t.Helper()
	root, err := devcluster.ModuleRoot()
	require.NoError(t, err)
	// The test server's own client binaries: pg_dump refuses a newer server.
	out, err := exec.Command("bash", filepath.Join(root, "scripts", "pg.sh"), "bindir").Output()
	require.NoError(t, err)
	u, err := url.Parse(schemaURL)
	require.NoError(t, err)
	return ledgerBackup{
		bindir:  strings.TrimSpace(string(out)),
		baseURL: pgtest.URL(t),
		schema:  u.Query().Get("search_path"),
		file:    filepath.Join(t.TempDir(), "ledger.dump"),
	}
}

func (b ledgerBackup) run(t *testing.T, program string, args ...string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(b.bindir, program), args...).CombinedOutput()
	require.NoError(t, err, "%s: %s", program, out)
}

func (b ledgerBackup) dump(t *testing.T) {
	t.Helper()
	b.run(t, "pg_dump", "--format=custom", "--schema="+b.schema, "--file="+b.file, "--dbname="+b.baseURL)
}

// loseAndRestore is the disaster and the restore: the ledger's schema is
// dropped with everything written since the dump, and the dump restored.
func (b ledgerBackup) loseAndRestore(t *testing.T) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), b.baseURL)
	require.NoError(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{b.schema}.Sanitize()+" CASCADE")
	require.NoError(t, err)
	b.run(t, "pg_restore", "--exit-on-error", "--dbname="+b.baseURL, b.file)
}

// TestRestoreFenceKeepsTokensAboveTheLostOnes runs work, backs the ledger
// up, runs more work with a fenced sink, loses the ledger and restores the
// backup. Without the fence (the control), the sink refuses the restored
// ledger's grants: it has seen their tokens already, and the work is stuck.
// With it, every new grant is accepted, a key completed after the backup
// and run again is flagged by the sink (its epoch changed), and a replica
// that served before the restore grants in the new epoch too.
func TestRestoreFenceKeepsTokensAboveTheLostOnes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schemaURL := pgtest.Schema(t)
	replica := ledgertest.StoreAt(t, schemaURL, testConfig) // serves before and after the restore
	sink := newFencedSink(t)
	backup := newLedgerBackup(t, schemaURL)

	// Before the backup: a key done, and a key whose worker holds a lease
	// that will run out.
	require.True(t, doWork(t, replica.Store, sink, "done-before", "w1").accepted)
	stalled, err := replica.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "restore", Key: "taken-after", Owner: "stalled", LeaseTTL: 20 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, ledger.Acquired, stalled.Outcome)
	held, err := replica.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "restore", Key: "held", Owner: "holder", LeaseTTL: time.Hour})
	require.NoError(t, err)
	backup.dump(t)

	// After the backup, lost with the disaster: the stalled lease taken
	// over and done, the held key done by its holder, a new key done.
	require.Eventually(t, func() bool {
		return doWork(t, replica.Store, sink, "taken-after", "w2").accepted
	}, time.Minute, 10*time.Millisecond)
	accepted, _ := sink.write(t, "held", held.FencingToken)
	require.True(t, accepted)
	_, err = replica.Store.Complete(ctx, ledger.CompleteRequest{Namespace: "restore", Key: "held", FencingToken: held.FencingToken})
	require.NoError(t, err)
	require.True(t, doWork(t, replica.Store, sink, "new-after", "w3").accepted)
	seenBeforeRestore := sink.maxToken(t)

	t.Run("without the fence the sink refuses the restored ledger", func(t *testing.T) {
		backup.loseAndRestore(t)
		control := ledgertest.StoreAt(t, schemaURL, testConfig)
		for _, key := range []string{"taken-after", "new-after"} {
			w := doWork(t, control.Store, sink, key, "control")
			require.False(t, w.accepted, "key %s: token %d was granted before the restore", key, w.token)
		}
	})

	// The restore, with its procedure this time (the same backup again).
	backup.loseAndRestore(t)
	restored := ledgertest.StoreAt(t, schemaURL, testConfig)
	fence, err := restored.Store.RestoreFence(ledger.WithCaller(ctx, "ops"), "restored last night's dump after the disk loss")
	require.NoError(t, err)
	require.Equal(t, int64(0), fence.PreviousEpoch)
	require.Positive(t, fence.Epoch)
	require.Equal(t, fence.Epoch<<ledger.EpochShift, fence.TokenFloor)
	require.Greater(t, fence.TokenFloor, seenBeforeRestore)
	require.Equal(t, int64(2), fence.LeasesEnded, "the stalled lease and the held one")
	require.NotNil(t, fence.BackupLastEventAt)
	require.Positive(t, fence.BackupLastEventID)
	require.Equal(t, held.FencingToken, fence.BackupMaxToken)
	epoch, err := restored.Store.FencingEpoch(ctx)
	require.NoError(t, err)
	require.Equal(t, fence.Epoch, epoch)

	// The holder from before the restore lost its lease: its calls are
	// refused, whatever it did after the backup.
	_, err = restored.Store.Complete(ctx, ledger.CompleteRequest{Namespace: "restore", Key: "held", FencingToken: held.FencingToken})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)

	// Every new grant is accepted by the sink; the keys completed after the
	// backup run again, and the sink flags them; the others are not.
	for _, step := range []struct {
		store *ledger.Store
		key   string
		rerun bool
	}{
		{replica.Store, "taken-after", true}, // a replica that served the old database, granting in the new epoch
		{restored.Store, "new-after", true},
		{restored.Store, "held", true},
		{restored.Store, "brand-new", false},
	} {
		w := doWork(t, step.store, sink, step.key, "after-restore")
		require.GreaterOrEqual(t, w.token, fence.TokenFloor, "key %s", step.key)
		require.True(t, w.accepted, "key %s: token %d", step.key, w.token)
		require.Equal(t, step.rerun, w.rerun, "key %s", step.key)
	}
	// The key completed before the backup replays its result: nothing runs.
	require.True(t, doWork(t, restored.Store, sink, "done-before", "after-restore").completedAlready)

	// The fence is in the audit trail, with the backup's high-water marks,
	// and each lease it ended has its force_released event.
	var detail map[string]any
	require.NoError(t, restored.Pool.QueryRow(ctx,
		`SELECT detail FROM events WHERE kind = 'restore_fenced' AND caller = 'ops'`).Scan(&detail))
	require.Equal(t, "restored last night's dump after the disk loss", detail["reason"])
	require.EqualValues(t, fence.BackupLastEventID, detail["backup_last_event_id"])
	require.EqualValues(t, fence.Epoch, detail["epoch"])
	var ended int
	require.NoError(t, restored.Pool.QueryRow(ctx,
		`SELECT count(*) FROM events WHERE kind = 'force_released' AND detail->>'reason' LIKE 'restore-fence: %'`).Scan(&ended))
	require.Equal(t, 2, ended)
}

// TestRestoreFenceTwiceRaisesTheEpochAgain: a second fence (a database
// restored again, or the step run twice) never lowers or repeats the
// epoch: the new floor is above every token granted before it.
func TestRestoreFenceTwiceRaisesTheEpochAgain(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	first, err := b.store.RestoreFence(ctx, "first")
	require.NoError(t, err)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
	require.Equal(t, first.TokenFloor, r.FencingToken, "a new key's first token is the floor")
	second, err := b.store.RestoreFence(ctx, "second")
	require.NoError(t, err)
	require.Equal(t, first.Epoch, second.PreviousEpoch)
	require.Greater(t, second.Epoch, first.Epoch)
	require.Greater(t, second.TokenFloor, r.FencingToken)
	require.Equal(t, r.FencingToken, second.BackupMaxToken)

	again := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
	require.Equal(t, second.TokenFloor+1, again.FencingToken, "the fence released the key at the new floor; its next grant is above")
	require.Equal(t, second.Epoch, ledger.TokenEpoch(again.FencingToken))
}

func TestRestoreFenceNeedsAReason(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	_, err := b.store.RestoreFence(ctx, "")
	var invalid *ledger.ValidationError
	require.ErrorAs(t, err, &invalid)
	require.Equal(t, "reason", invalid.Field)
	epoch, err := b.store.FencingEpoch(ctx)
	require.NoError(t, err)
	require.Zero(t, epoch)
}
