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
}

// Launch asks for one runner in a pool, for the org and installation of
// the queued job that caused it (JobID 0 for a warm pool's runner).
type Launch struct {
	Pool           string
	Org            string
	InstallationID int64
	JobID          int64
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
}

type bucket struct{ pool, org string }

// Decide is the scaling decision, free of I/O. Accounting is by counts per
// pool and organization, never by a job-runner binding: GitHub gives a
// queued job to any idle runner with matching labels. The invariant it
// keeps: unassigned runners (launching or started) == queued jobs, within
// the limits; surplus idle runners are torn down; timers catch runners that
// never register and jobs that run too long.
func Decide(cfg Config, s Snapshot) Decision {
	var d Decision
	unassigned := map[bucket]int{}
	queued := map[bucket]int{}
	poolTotal := map[string]int{}
	total, launching := 0, 0
	for _, r := range s.Runners {
		total++
		poolTotal[r.Pool]++
		switch r.State {
		case fleet.RunnerLaunching:
			launching++
			unassigned[bucket{r.Pool, r.Org}]++
		case fleet.RunnerStarted:
			unassigned[bucket{r.Pool, r.Org}]++
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
		if s.Now.Before(s.NotBefore[p.Name]) || s.Drained[p.Name] {
			continue
		}
		if total >= cfg.MaxInstances || launching >= cfg.MaxLaunching {
			continue
		}
		if p.MaxInstances > 0 && poolTotal[p.Name] >= p.MaxInstances {
			continue
		}
		d.Launches = append(d.Launches, Launch{Pool: p.Name, Org: j.Org, InstallationID: j.InstallationID, JobID: j.ID})
		total++
		launching++
		poolTotal[p.Name]++
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
				d.Launches = append(d.Launches, Launch{Pool: p.Name, Org: o.Login, InstallationID: o.InstallationID})
				total++
				launching++
				poolTotal[p.Name]++
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
	for i := len(s.Runners) - 1; i >= 0; i-- {
		r := s.Runners[i]
		b := bucket{r.Pool, r.Org}
		if r.State != fleet.RunnerStarted || surplus[b] == 0 {
			continue
		}
		surplus[b]--
		d.Teardowns = append(d.Teardowns, Teardown{Runner: r.Name, Mode: fleet.ModeSurplus, Reason: "surplus idle runner"})
	}

	// Timers.
	for _, r := range s.Runners {
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
