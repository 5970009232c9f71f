package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

// Fault is one injection of a nemesis, healed.
type Fault struct {
	// Nemesis names the nemesis (for mixes), Kind the kind of fault of a
	// nemesis that has several, and Detail what it did.
	Nemesis string `json:"nemesis"`
	Kind    string `json:"kind,omitempty"`
	Detail  string `json:"detail"`
	// Start is when the fault began and Healed when it was over (the
	// process resumed or restarted and ready, the connection cut, ...).
	Start  time.Time `json:"start"`
	Healed time.Time `json:"healed"`
	// FirstSuccessSeconds is the time from Healed (from Start, with
	// FromStart) to the first successful Complete; Rate90Seconds to the
	// first second in which Completes succeeded at 90% of the rate of the
	// two seconds before the fault. Nil when it did not happen before the
	// next fault (or the end).
	FirstSuccessSeconds *float64 `json:"first_success_s"`
	Rate90Seconds       *float64 `json:"rate90_s"`
	// FromStart measures the recovery from the fault rather than from its
	// healing: a failover's recovery happens while the harness waits for
	// the cluster to be whole again.
	FromStart bool `json:"from_start,omitempty"`
	// Error is set when the harness could not inject or heal the fault;
	// the scenario then fails.
	Error string `json:"error,omitempty"`
}

// nemesis is a named fault that a scenario injects over and over.
type nemesis struct {
	name string
	// inject makes the n-th fault (from 0) and heals it before it returns.
	inject func(ctx context.Context, s *scenarioRun, n int) Fault
	// ha says that the nemesis needs a Patroni cluster: its scenario runs
	// over one, and the mix leaves it out.
	ha bool
	// kinds are the kinds of fault the nemesis injects in turn, each
	// Config.Faults times at least; none for a nemesis of one kind.
	kinds []string
}

// nemeses are the faults, in the order of the scenarios that run them.
var nemeses = []nemesis{
	{name: "race", inject: injectRace},
	{name: "pause", inject: injectPause},
	{name: "crash", inject: injectCrash},
	{name: "ledgerd-kill", inject: injectLedgerdKill},
	{name: "pg-restart", inject: injectPGRestart},
	{name: "pg-pause", inject: injectPGPause},
	{name: "lost-response", inject: injectLostResponse},
	{name: "drain", inject: injectDrain},
	{name: "pg-failover", inject: injectPGFailover, ha: true, kinds: failoverKinds},
}

// needsHA says whether a scenario runs over a Patroni cluster.
func needsHA(scenario string) bool {
	for _, n := range nemeses {
		if n.name == scenario {
			return n.ha
		}
	}
	return false
}

// fault starts a Fault record at now.
func fault(name, format string, args ...any) Fault {
	return Fault{Nemesis: name, Detail: fmt.Sprintf(format, args...), Start: time.Now()}
}

// healed stamps f as healed now, with err as its error if not nil.
func (f Fault) healed(err error) Fault {
	f.Healed = time.Now()
	if err != nil {
		f.Error = err.Error()
	}
	return f
}

// injectRace lets 12 extra workers loose on 4 fresh keys at the same
// instant, in random orders, half of them with Do and the others raw.
func injectRace(ctx context.Context, s *scenarioRun, n int) Fault {
	const racers, keys = 12, 4
	f := fault("race", "%d workers start on the same %d fresh keys at once", racers, keys)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for r := range racers {
		spec := workerSpec{Name: fmt.Sprintf("race%d", r), Raw: r%2 == 1}
		order := rand.Perm(keys)
		wg.Go(func() {
			<-start
			for _, j := range order {
				s.workers.doKey(ctx, spec, fmt.Sprintf("race-%04d-%d", n, j))
			}
		})
	}
	f.Start = time.Now()
	close(start)
	wg.Wait()
	return f.healed(nil)
}

// injectPause stops a worker process (SIGSTOP) for two lease TTLs and a
// half second, long enough for its chains' other workers to take its keys
// over, then resumes it: its late writes, Heartbeats and Completes must be
// refused.
func injectPause(_ context.Context, s *scenarioRun, n int) Fault {
	p := s.procs[n%len(s.procs)]
	pause := 2*s.load.LeaseTTL + 500*time.Millisecond
	// Aim: stop the process while one of its workers is in its work, so
	// that it wakes up as a zombie (for at most a second: then anyway).
	for deadline := time.Now().Add(time.Second); !s.history.inWork(p.name+".") && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	f := fault("pause", "SIGSTOP worker process %s for %s, then SIGCONT", p.name, pause)
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return f.healed(err)
	}
	time.Sleep(pause)
	return f.healed(p.signal(syscall.SIGCONT))
}

// injectCrash kills a worker process (SIGKILL) in the middle of its work
// and starts a new one in its place; the keys it held are taken over once
// their leases run out.
func injectCrash(_ context.Context, s *scenarioRun, n int) Fault {
	i := n % len(s.procs)
	f := fault("crash", "SIGKILL worker process %s, start a new one", s.procs[i].name)
	s.procs[i].kill()
	time.Sleep(100 * time.Millisecond)
	return f.healed(s.restartProcess(i))
}

// injectLedgerdKill kills one ledgerd (SIGKILL) while the other serves,
// and every third time both; they are restarted after 300ms.
func injectLedgerdKill(ctx context.Context, s *scenarioRun, n int) Fault {
	victims := []*devcluster.Ledgerd{s.replicas[n%len(s.replicas)]}
	detail := "SIGKILL " + victims[0].Name() + " while the other replica serves, restart it"
	if n%3 == 2 {
		victims, detail = s.replicas, "SIGKILL every ledgerd, restart them"
	}
	f := fault("ledgerd-kill", "%s", detail)
	for _, l := range victims {
		_ = l.Signal(syscall.SIGKILL)
		_ = l.Wait(10 * time.Second) // killed: its exit status says so
	}
	time.Sleep(300 * time.Millisecond)
	for _, l := range victims {
		if err := l.Restart(ctx); err != nil {
			return f.healed(err)
		}
	}
	return f.healed(nil)
}

// injectPGRestart restarts PostgreSQL, alternately in fast and immediate
// mode (as pg_ctl restart -m fast|immediate does).
func injectPGRestart(ctx context.Context, s *scenarioRun, n int) Fault {
	mode := []string{"fast", "immediate"}[n%2]
	f := fault("pg-restart", "restart PostgreSQL (-m %s)", mode)
	return f.healed(s.pg.Restart(ctx, mode))
}

// injectPGPause stops every PostgreSQL process (SIGSTOP) for one and a half
// RPC attempt deadlines, then resumes them.
func injectPGPause(_ context.Context, s *scenarioRun, _ int) Fault {
	pause := s.load.AttemptTimeout * 3 / 2
	f := fault("pg-pause", "SIGSTOP PostgreSQL for %s (RPC deadlines are %s), then SIGCONT", pause, s.load.AttemptTimeout)
	resume, err := s.pg.Pause()
	if err != nil {
		return f.healed(err)
	}
	time.Sleep(pause)
	return f.healed(resume())
}

// injectLostResponse has a proxy cut the connections of the next three
// requests after forwarding them: their responses, and those of every
// other call on the connection, are lost after ledgerd committed.
func injectLostResponse(_ context.Context, s *scenarioRun, n int) Fault {
	const cuts = 3
	p := s.proxies[n%len(s.proxies)]
	f := fault("lost-response", "proxy %d drops the responses of the next %d requests and cuts their connections", n%len(s.proxies), cuts)
	before := p.cuts.Load()
	p.cut(cuts)
	for deadline := time.Now().Add(3 * time.Second); p.cuts.Load() < before+cuts && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	p.disarm()
	return f.healed(nil)
}

// injectDrain sends SIGTERM to one ledgerd under load; it must drain (no
// call in flight fails) and exit 0. It is then restarted.
func injectDrain(ctx context.Context, s *scenarioRun, n int) Fault {
	l := s.replicas[n%len(s.replicas)]
	f := fault("drain", "SIGTERM %s under load (graceful drain), restart it", l.Name())
	if err := l.Signal(syscall.SIGTERM); err != nil {
		return f.healed(err)
	}
	s.drains = append(s.drains, f.Start)
	if err := l.Wait(ledgerdShutdownTimeout + 5*time.Second); err != nil {
		_ = l.Signal(syscall.SIGKILL)
		_ = l.Wait(5 * time.Second)
		return f.healed(fmt.Errorf("%s did not drain and exit 0 after SIGTERM: %w", l.Name(), err))
	}
	return f.healed(l.Restart(ctx))
}

// failoverKinds are the faults of the pg-failover nemesis, in turn.
var failoverKinds = []string{"kill", "switchover", "isolate"}

// injectPGFailover makes the primary of the Patroni cluster go away, in
// turn: SIGKILL of its PostgreSQL (a crash), a clean switchover, and a
// partition that cuts it off from etcd and from the standby while ledgerd
// still reaches it (Patroni demotes it; with synchronous replication, no
// write it takes meanwhile can be acknowledged). The fault ends when the
// standby has taken over (the partition is then healed); the harness
// then waits until the cluster has a synchronous standby again, so that
// the next fault is a failover that loses nothing. Recovery is measured
// from the fault.
func injectPGFailover(ctx context.Context, s *scenarioRun, n int) Fault {
	kind := failoverKinds[n%len(failoverKinds)]
	var f Fault
	var err error
	switch kind {
	case "kill":
		f = fault("pg-failover", "SIGKILL the primary's PostgreSQL; Patroni promotes the synchronous standby")
		var killed *devcluster.HAMember
		if killed, err = s.ha.KillPrimary(ctx); err == nil {
			_, err = s.ha.WaitNewPrimary(ctx, killed)
		}
	case "switchover":
		f = fault("pg-failover", "patroni switchover from the primary to the synchronous standby")
		_, _, err = s.ha.Switchover(ctx)
	case "isolate":
		f = fault("pg-failover", "cut the primary off from etcd and the standby, ledgerd still reaching it, until the standby takes over")
		var primary *devcluster.HAMember
		if primary, err = s.ha.Primary(ctx); err == nil {
			heal := s.ha.Isolate(primary)
			_, err = s.ha.WaitNewPrimary(ctx, primary)
			heal()
		}
	}
	f.Kind, f.FromStart = kind, true
	if err == nil {
		err = s.ha.WaitHealthy(ctx)
	}
	return f.healed(err)
}
