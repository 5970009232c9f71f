package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCheckerFindsAnomalies feeds the checker histories and final states
// with a planted anomaly each, so that a checker that sees nothing fails
// here rather than passing every chaos run.
func TestCheckerFindsAnomalies(t *testing.T) {
	t.Parallel()
	done := finalEntry{state: "completed", token: 2, result: "k@2"}
	clean := ledgerState{
		entries: map[string]finalEntry{"k": done},
		events: []eventRow{
			{key: "k", kind: "reserved", token: 1},
			{key: "k", kind: "reclaimed", token: 2},
			{key: "k", kind: "completed", token: 2},
		},
		fenced:    map[string]finalEntry{"k": {token: 2, result: "k@2"}},
		fencedLog: []tokenRow{{"k", 1}, {"k", 2}},
		control:   []tokenRow{{"k", 1}, {"k", 2}},
	}
	cleanOps := []Op{
		{Method: "Reserve", Key: "k", Reply: "acquired", Token: 1, Class: ClassOK, Start: 10, End: 20},
		{Method: "Reserve", Key: "k", Reply: "acquired", Token: 2, Class: ClassOK, Start: 30, End: 40},
		{Method: "Complete", Key: "k", Token: 1, Value: "k@1", Class: ClassFailed, Code: "ABORTED", Start: 50, End: 60},
		{Method: "Complete", Key: "k", Token: 2, Value: "k@2", Class: ClassOK, Start: 50, End: 60},
	}
	api := map[string]finalEntry{"k": done}

	t.Run("a clean run has no anomaly", func(t *testing.T) {
		t.Parallel()
		var a anomalies
		require.Zero(t, checkDuplicates(clean, &a).Total)
		require.Zero(t, checkLost(cleanOps, clean, api, &a).Total)
		require.Zero(t, checkStale(cleanOps, clean, &a).Total)
		require.Zero(t, checkControl(clean).Duplicates)
		require.Empty(t, a.examples)
	})

	t.Run("duplicates", func(t *testing.T) {
		t.Parallel()
		st := clean
		st.events = append(append([]eventRow{}, clean.events...), eventRow{key: "k", kind: "completed", token: 2})
		st.fencedLog = append(append([]tokenRow{}, clean.fencedLog...), tokenRow{"k", 2})
		var a anomalies
		require.Equal(t, Duplicates{LedgerCompletions: 1, FencedEpochs: 1, Total: 2}, checkDuplicates(st, &a))
	})

	t.Run("lost", func(t *testing.T) {
		t.Parallel()
		ops := append(append([]Op{}, cleanOps...),
			Op{Method: "Complete", Key: "k", Token: 2, Value: "other", Class: ClassOK},                  // acknowledged, not kept
			Op{Method: "Reserve", Key: "k", Reply: "completed", Token: 1, Value: "k@1", Class: ClassOK}, // a replay of something else
		)
		st := clean
		st.fenced = map[string]finalEntry{"k": {token: 1, result: "k@1"}} // the effect is not the completion's
		var a anomalies
		lost := checkLost(ops, st, map[string]finalEntry{"k": {state: "leased", token: 2}}, &a)
		require.Equal(t, Lost{Completes: 1, Results: 1, Effects: 1, APIMismatches: 1, Total: 4}, lost)
	})

	t.Run("stale accepted", func(t *testing.T) {
		t.Parallel()
		// A Heartbeat under token 1, sent after token 2 was granted, succeeded;
		// token 1 completed after token 2 was granted; the sink took token 1
		// after token 2.
		ops := append(append([]Op{}, cleanOps...), Op{Method: "Heartbeat", Key: "k", Token: 1, Class: ClassOK, Start: 45, End: 46})
		st := clean
		st.events = append(append([]eventRow{}, clean.events[:2]...), eventRow{key: "k", kind: "completed", token: 1})
		st.fencedLog = []tokenRow{{"k", 2}, {"k", 1}}
		var a anomalies
		require.Equal(t, Stale{History: 1, Events: 1, Sink: 1, Total: 3}, checkStale(ops, st, &a))
	})

	t.Run("a refused call invoked before the newer grant is not stale", func(t *testing.T) {
		t.Parallel()
		ops := append(append([]Op{}, cleanOps...), Op{Method: "Heartbeat", Key: "k", Token: 1, Class: ClassOK, Start: 35, End: 45})
		var a anomalies
		require.Zero(t, checkStale(ops, clean, &a).Total, "invoked before token 2's grant was answered: concurrent, allowed")
	})

	t.Run("a token that does not grow across a failover", func(t *testing.T) {
		t.Parallel()
		// Token 2 granted again, asked for after its first grant was answered
		// (a grant lost in a failover); a concurrent grant is not one.
		ops := append(append([]Op{}, cleanOps...),
			Op{Method: "Reserve", Key: "k", Reply: "acquired", Token: 2, Class: ClassOK, Start: 41, End: 42},
			Op{Method: "Reserve", Key: "j", Reply: "acquired", Token: 1, Class: ClassOK, Start: 10, End: 20},
			Op{Method: "Reserve", Key: "j", Reply: "acquired", Token: 2, Class: ClassOK, Start: 15, End: 25})
		var a anomalies
		require.Equal(t, Stale{Regressions: 1, Total: 1}, checkStale(ops, clean, &a))
	})

	t.Run("the control sink shows a zombie's write", func(t *testing.T) {
		t.Parallel()
		st := clean
		st.control = []tokenRow{{"k", 1}, {"k", 2}, {"k", 1}, {"j", 1}}
		require.Equal(t, Control{Writes: 4, Keys: 2, KeysRewritten: 1, StaleWrites: 1, Duplicates: 1}, checkControl(st))
	})
}

// TestClassify checks which outcomes are definite.
func TestClassify(t *testing.T) {
	t.Parallel()
	class, code := classify(nil)
	require.Equal(t, ClassOK, class)
	require.Equal(t, "OK", code)
	require.Equal(t, "DEADLINE_EXCEEDED", codeName(4))
	require.Equal(t, "FAILED_PRECONDITION", codeName(9))
}

// TestChainKey checks that a key names its chain and index.
func TestChainKey(t *testing.T) {
	t.Parallel()
	chain, i, ok := parseChainKey(chainKey(12, 345))
	require.True(t, ok)
	require.Equal(t, []int{12, 345}, []int{chain, i})
	_, _, ok = parseChainKey("race-0001-2")
	require.False(t, ok)
}

// TestMeasureRecovery checks the recovery times of a fault measured from
// its healing, and of one measured from its start across an outage.
func TestMeasureRecovery(t *testing.T) {
	t.Parallel()
	const ms = int64(time.Millisecond)
	at := func(n int64) time.Time { return time.Unix(0, n*ms) }
	var ops []Op
	// One Complete every 10ms from 0 to 3000ms, none in [3000, 4000): the
	// outage, then every 10ms again until 6000ms.
	for ts := int64(0); ts < 6000; ts += 10 {
		if ts < 3000 || ts >= 4000 {
			ops = append(ops, Op{Method: "Complete", Class: ClassOK, End: ts * ms})
		}
	}
	faults := []Fault{{Start: at(2995), Healed: at(3500), FromStart: true}}
	measureRecovery(ops, faults, at(0), at(6000))
	// Answers just after the fault (none here) would not count: the outage
	// is the longest gap, from 2990 to 4000.
	require.InDelta(t, 1.005, *faults[0].FirstSuccessSeconds, 1e-9)
	require.NotNil(t, faults[0].Rate90Seconds)
	require.InDelta(t, 1.0, *faults[0].Rate90Seconds, 0.06)

	healedFaults := []Fault{{Start: at(2995), Healed: at(3500)}}
	measureRecovery(ops, healedFaults, at(0), at(6000))
	require.InDelta(t, 0.5, *healedFaults[0].FirstSuccessSeconds, 1e-9, "from Healed")
}
