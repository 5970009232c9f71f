package main

import (
	"context"
	"regexp"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestRestoreFenceCommand runs `ledgerd restore-fence` as the runbook does,
// on a database that was never migrated (a backup of an older ledgerd
// needs its migrations first): it requires a reason, migrates, raises the
// epoch and prints the new floor and the backup's high-water marks.
func TestRestoreFenceCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	var out, errOut ledgertest.LogBuffer
	err := run(ctx, []string{"restore-fence", "--database-url", url}, env(nil), &out, &errOut)
	require.ErrorContains(t, err, "--reason is required")

	err = run(ctx, []string{"restore-fence", "--database-url", url, "--log-format", "json", "--reason", "restored the 02:00 dump"}, env(nil), &out, &errOut)
	require.NoError(t, err, errOut.String())
	match := regexp.MustCompile(`fencing epoch raised from 0 to (\d+): every token granted from now on is at least (\d+)`).FindStringSubmatch(out.String())
	require.NotNil(t, match, out.String())
	require.Contains(t, out.String(), "leases ended: 0")
	require.Contains(t, out.String(), "the backup's last event: id 0 at none; its highest token: 0")
	epoch, err := strconv.ParseInt(match[1], 10, 64)
	require.NoError(t, err)
	floor, err := strconv.ParseInt(match[2], 10, 64)
	require.NoError(t, err)
	require.Equal(t, epoch<<ledger.EpochShift, floor)

	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var stored int64
	var caller string
	require.NoError(t, conn.QueryRow(ctx, `SELECT f.epoch, e.caller FROM fencing_epoch f, events e WHERE e.kind = 'restore_fenced'`).Scan(&stored, &caller))
	require.Equal(t, epoch, stored)
	require.Equal(t, "ledgerd-restore-fence", caller)
}
