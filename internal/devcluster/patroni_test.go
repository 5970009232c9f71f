package devcluster_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/ledger"
)

// haTimeout bounds one failover of the test, from the fault to a healthy
// cluster again: generous, for a loaded machine.
const haTimeout = 5 * time.Minute

// TestHAClusterFailsOver brings a Patroni cluster up, writes to it through
// the multi-host URL while the primary is killed, switched over and
// isolated, and checks that the primary changed each time and that every
// acknowledged write is on the final primary.
func TestHAClusterFailsOver(t *testing.T) {
	ctx := context.Background()
	c, err := devcluster.StartHA(ctx, devcluster.HAConfig{Log: testLog{t}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Destroy()) })

	// A pool as ledgerd's: above all, one that never sends a cancel request,
	// which would turn a write waiting for the synchronous standby into a
	// local commit, and its retry into a false acknowledgement.
	config, err := pgxpool.ParseConfig(c.URL())
	require.NoError(t, err)
	ledger.ConfigurePool(config)
	pool, err := pgxpool.NewWithConfig(ctx, config)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, "CREATE TABLE acked (id bigint PRIMARY KEY)")
	require.NoError(t, err)

	w := startWriter(ctx, pool)
	t.Cleanup(w.stop)

	t.Run("kill", func(t *testing.T) {
		before := w.acked()
		killed, err := c.KillPrimary(ctx)
		require.NoError(t, err)
		requireNewPrimary(t, c, killed)
		w.requireProgress(t, before)
		require.NoError(t, c.WaitHealthy(ctx))
	})
	t.Run("switchover", func(t *testing.T) {
		before := w.acked()
		from, to, err := c.Switchover(ctx)
		require.NoError(t, err)
		require.Equal(t, to, requireNewPrimary(t, c, from))
		w.requireProgress(t, before)
		require.NoError(t, c.WaitHealthy(ctx))
	})
	t.Run("isolate", func(t *testing.T) {
		isolated, err := c.Primary(ctx)
		require.NoError(t, err)
		// A session on the isolated primary, opened before the partition.
		direct, err := pgx.Connect(ctx, isolated.MemberURL())
		require.NoError(t, err)
		defer func() { _ = direct.Close(context.WithoutCancel(ctx)) }()

		before := w.acked()
		heal := c.Isolate(isolated)
		// With its standby cut off, the primary cannot have a commit
		// acknowledged: the session waits for the synchronous standby
		// until Patroni demotes the primary and ends it.
		insertCtx, cancel := context.WithTimeout(ctx, haTimeout)
		_, err = direct.Exec(insertCtx, "INSERT INTO acked VALUES (-1)")
		cancel()
		require.Error(t, err, "a write on an isolated primary was acknowledged")
		require.NotErrorIs(t, err, context.DeadlineExceeded, "the isolated primary was never demoted")
		requireNewPrimary(t, c, isolated)
		w.requireProgress(t, before)
		heal()
		require.NoError(t, c.WaitHealthy(ctx))
	})

	w.stop()
	acked := w.ids()
	require.NotEmpty(t, acked)
	var stored int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM acked WHERE id = ANY($1)", acked).Scan(&stored))
	require.Equal(t, len(acked), stored, "acknowledged writes lost")
	var unacked int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM acked WHERE id = -1").Scan(&unacked))
	require.Zero(t, unacked, "the isolated primary's write reached the new primary")
}

// requireNewPrimary waits until a member other than old is the primary,
// and returns it.
func requireNewPrimary(t *testing.T, c *devcluster.HACluster, old *devcluster.HAMember) *devcluster.HAMember {
	t.Helper()
	var primary *devcluster.HAMember
	require.Eventually(t, func() bool {
		primary, _ = c.Primary(context.Background())
		return primary != nil && primary != old
	}, haTimeout, 100*time.Millisecond, "no member took over from %s", old.Name)
	return primary
}

// writer inserts increasing ids through a pool, retrying each until it is
// acknowledged, and remembers the acknowledged ones.
type writer struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	count  atomic.Int64
	mu     sync.Mutex
	list   []int64
}

func startWriter(ctx context.Context, pool *pgxpool.Pool) *writer {
	ctx, cancel := context.WithCancel(ctx)
	w := &writer{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for id := int64(1); ctx.Err() == nil; id++ {
			for ctx.Err() == nil {
				attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := pool.Exec(attempt, "INSERT INTO acked VALUES ($1) ON CONFLICT DO NOTHING", id)
				cancel()
				if err == nil {
					w.mu.Lock()
					w.list = append(w.list, id)
					w.mu.Unlock()
					w.count.Add(1)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	return w
}

func (w *writer) acked() int64 { return w.count.Load() }

// requireProgress waits until more writes than before are acknowledged.
func (w *writer) requireProgress(t *testing.T, before int64) {
	t.Helper()
	require.Eventually(t, func() bool { return w.acked() > before+10 }, haTimeout, 50*time.Millisecond,
		"writes did not resume")
}

func (w *writer) stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
}

func (w *writer) ids() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.list...)
}

// testLog writes the harness's progress to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(string(p))
	return len(p), nil
}
