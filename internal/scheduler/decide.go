package scheduler

import (
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Snapshot is the state a decision is made from.
type Snapshot struct {
	Now       time.Time
	Queued    []fleet.Job    // jobs waiting for a runner, oldest first
	Runners   []fleet.Runner // live runners
	NotBefore map[string]time.Time
	Orgs      []fleet.Org // organizations that warm pools keep runners for
	Drained   map[string]bool
	// Placement, when set, is the cluster: Decide then names the member
	// each runner goes to.
	Placement *Placement
}

// Launch asks for one runner in a pool, for the org and installation of
// the queued job that caused it (JobID 0 for a warm pool's runner).
type Launch struct {
	Pool           string
	Org            string
	InstallationID int64
	JobID          int64
	Member         string // the cluster member to launch on; empty: LXD places it by the pool's target
}

// Teardown asks for a runner to be deleted.
type Teardown struct {
	Runner string
	Mode   fleet.DeleteMode
	Reason string
}

// Decision is what Decide wants done.
type Decision struct {
	Launches  []Launch
	Teardowns []Teardown
	// Waiting says, by job, why a queued job gets no runner when the
	// cluster is why: no member can run its pool, or none can take a
	// runner now. Other jobs have no entry.
	Waiting map[int64]string
	// Lost are runners with a job (busy, or deleting after it) whose
	// member does not answer: their jobs fail at GitHub, and the service
	// does not run them again.
	Lost []LostRunner
}

// LostRunner is a busy runner on a member that does not answer.
type LostRunner struct {
	Runner, Member string
}

type bucket struct{ pool, org string }

// Decide is the scaling decision, free of I/O. Accounting is by counts per
// pool and organization, never by a job-runner binding: GitHub gives a
// queued job to any idle runner with matching labels. The invariant it
// keeps: unassigned runners (launching or started) == queued jobs, within
// the limits; surplus idle runners are torn down; timers catch runners that
// never register and jobs that run too long.
func Decide(cfg Config, s Snapshot) Decision {
	d := Decision{Waiting: map[int64]string{}}
	pl := s.Placement
	unassigned := map[bucket]int{}
	queued := map[bucket]int{}
	poolTotal := map[string]int{}
	onMember := map[string]int{}
	total, launching := 0, 0
	live := s.Runners[:0:0]
	for _, r := range s.Runners {
		// A runner on a member that does not answer is no capacity: not a
		// runner for a queued job, not a warm one, and it holds no slot.
		if m, lost := pl.lost(r); lost {
			switch {
			case r.State == fleet.RunnerBusy, r.State == fleet.RunnerDeleting && r.DeleteMode == fleet.ModeJobDone:
				// Its job fails at GitHub, if GitHub has not said so already.
				d.Lost = append(d.Lost, LostRunner{Runner: r.Name, Member: m})
			case r.State == fleet.RunnerStarted:
				// Its GitHub record goes now, so no job is given to it; its
				// instance when the member answers again.
				d.Teardowns = append(d.Teardowns, Teardown{Runner: r.Name, Mode: fleet.ModeSurplus, Reason: "member " + m + " does not answer"})
			}
			continue
		}
		live = append(live, r)
		total++
		poolTotal[r.Pool]++
		if pl != nil && pl.Where[r.Name] != "" {
			onMember[pl.Where[r.Name]]++
		}
		switch r.State {
		case fleet.RunnerLaunching:
			launching++
			unassigned[bucket{r.Pool, r.Org}]++
		case fleet.RunnerStarted:
			unassigned[bucket{r.Pool, r.Org}]++
		}
	}

	// place names the member for one more runner of p, or says why there
	// is none. Without a cluster view there is no member to name; nor is
	// there on a standalone server, which takes no target, though it is
	// still checked (its architectures).
	place := func(p *Pool) (string, string, bool) {
		if pl == nil {
			return "", "", true
		}
		m, why := pl.place(cfg, p, onMember)
		if m != "" && !pl.Clustered {
			return "", "", true
		}
		return m, why, m != ""
	}
	launch := func(l Launch) {
		d.Launches = append(d.Launches, l)
		total++
		launching++
		poolTotal[l.Pool]++
		if l.Member != "" {
			onMember[l.Member]++
		}
	}

	// Launch for the oldest queued jobs first (FIFO across pools). A job
	// already covered by an unassigned runner of its pool needs nothing.
	covered := map[bucket]int{}
	launched := map[bucket]int{}
	for _, j := range s.Queued {
		b := bucket{j.Pool, j.Org}
		queued[b]++
		if covered[b] < unassigned[b] {
			covered[b]++
			continue
		}
		p := cfg.pool(j.Pool)
		if p == nil {
			continue // pool removed from the config; the job waits for an operator
		}
		if pl != nil {
			// No member can ever run the pool: say so whatever the limits.
			if _, why := pl.candidates(p); why != "" {
				d.Waiting[j.ID] = why
				continue
			}
		}
		if s.Now.Before(s.NotBefore[p.Name]) || s.Drained[p.Name] {
			continue
		}
		if total >= cfg.MaxInstances || launching >= cfg.MaxLaunching {
			continue
		}
		if p.MaxInstances > 0 && poolTotal[p.Name] >= p.MaxInstances {
			continue
		}
		member, why, ok := place(p)
		if !ok {
			d.Waiting[j.ID] = why
			continue
		}
		launch(Launch{Pool: p.Name, Org: j.Org, InstallationID: j.InstallationID, JobID: j.ID, Member: member})
		covered[b]++
		launched[b]++
	}

	// Warm pools: min_idle unassigned runners beyond the queued jobs, per
	// organization, after the queued jobs had their turn at the limits.
	warm := map[bucket]int{}
	for _, o := range s.Orgs {
		for i := range cfg.Pools {
			p := &cfg.Pools[i]
			if p.MinIdle == 0 {
				continue
			}
			b := bucket{p.Name, o.Login}
			warm[b] = p.MinIdle
			for unassigned[b]+launched[b] < queued[b]+p.MinIdle {
				if s.Now.Before(s.NotBefore[p.Name]) || s.Drained[p.Name] || total >= cfg.MaxInstances || launching >= cfg.MaxLaunching ||
					(p.MaxInstances > 0 && poolTotal[p.Name] >= p.MaxInstances) {
					break
				}
				member, _, ok := place(p)
				if !ok {
					break
				}
				launch(Launch{Pool: p.Name, Org: o.Login, InstallationID: o.InstallationID, Member: member})
				launched[b]++
			}
		}
	}

	// Surplus: more unassigned runners than queued jobs (plus the warm
	// target). Only started runners are candidates (a launching one is
	// still being made), the newest first, since the oldest is likeliest
	// to be online already.
	surplus := map[bucket]int{}
	for b, n := range unassigned {
		if n > queued[b]+warm[b] {
			surplus[b] = n - queued[b] - warm[b]
		}
	}
	for i := len(live) - 1; i >= 0; i-- {
		r := live[i]
		b := bucket{r.Pool, r.Org}
		if r.State != fleet.RunnerStarted || surplus[b] == 0 {
			continue
		}
		surplus[b]--
		d.Teardowns = append(d.Teardowns, Teardown{Runner: r.Name, Mode: fleet.ModeSurplus, Reason: "surplus idle runner"})
	}

	// Idle runners on a member being drained or evacuated leave it; a
	// replacement goes elsewhere next step. Like a surplus runner, GitHub
	// is asked first, so one that just took a job finishes it there.
	for _, r := range live {
		if _, why := pl.retiring(r); why != "" && r.State == fleet.RunnerStarted && !alreadyTorn(d, r.Name) {
			d.Teardowns = append(d.Teardowns, Teardown{Runner: r.Name, Mode: fleet.ModeSurplus, Reason: "idle runner retired: " + why})
		}
	}

	// Timers.
	for _, r := range live {
		switch {
		case r.State == fleet.RunnerStarted && r.OnlineAt.IsZero() && cfg.RegistrationTimeout > 0 &&
			!s.Now.Before(r.StartedAt.Add(cfg.RegistrationTimeout)) && !alreadyTorn(d, r.Name):
			d.Teardowns = append(d.Teardowns, Teardown{Runner: r.Name, Mode: fleet.ModeRegistration,
				Reason: "runner not online within registration_timeout"})
		case r.State == fleet.RunnerBusy && cfg.MaxJobDuration > 0 && !s.Now.Before(r.BusyAt.Add(cfg.MaxJobDuration)):
			d.Teardowns = append(d.Teardowns, Teardown{Runner: r.Name, Mode: fleet.ModeForce,
				Reason: "job ran past max_job_duration"})
		case r.State == fleet.RunnerStarted && !alreadyTorn(d, r.Name) && idleTooLong(cfg, r, s.Now):
			// Recycled like a surplus runner: GitHub is asked first, so one
			// that just took a job is kept. Its replacement comes next step.
			d.Teardowns = append(d.Teardowns, Teardown{Runner: r.Name, Mode: fleet.ModeSurplus,
				Reason: "idle longer than max_idle_age"})
		}
	}
	return d
}

func alreadyTorn(d Decision, name string) bool {
	for _, t := range d.Teardowns {
		if t.Runner == name {
			return true
		}
	}
	return false
}

func idleTooLong(cfg Config, r fleet.Runner, now time.Time) bool {
	p := cfg.pool(r.Pool)
	return p != nil && p.MaxIdleAge > 0 && !r.StartedAt.IsZero() && !now.Before(r.StartedAt.Add(p.MaxIdleAge))
}
