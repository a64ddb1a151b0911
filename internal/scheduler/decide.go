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
	// Prepared are the prepared instances, oldest first.
	Prepared []fleet.Prepared
	// Images is what each pool image stands for now (its fingerprint),
	// when known: a prepared instance of another image is replaced.
	Images map[string]string
	// Paired are the runners being torn down whose slot a launch already
	// waits for (Launch.After).
	Paired map[string]bool
	// PrepareNotBefore holds back a pool's prepared instances after a
	// failure to make one.
	PrepareNotBefore map[string]time.Time
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
	// Prepared, when set, is the prepared instance the launch takes: it
	// only gets its JIT config and is started.
	Prepared string
	// After, when set, is a runner whose instance is being deleted: the
	// launch asks GitHub for its JIT config at once, and creates or starts
	// its instance once that runner's slot is free, so that a full pool
	// does not pay GitHub's latency in series with LXD's.
	After string
}

// Prepare asks for one more prepared instance of a pool.
type Prepare struct {
	Pool   string
	Member string // the cluster member to make it on; empty: LXD places it by the pool's target
}

// Unprepare asks for a prepared instance to be deleted.
type Unprepare struct {
	Name, Reason string
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
	// Prepares and Unprepares keep each pool's prepared instances.
	Prepares   []Prepare
	Unprepares []Unprepare
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

	// Prepared instances: those a launch may take, by pool, oldest first.
	// One whose image changed, that is too old, or that is more than its
	// pool keeps, goes; so does one on a member being drained.
	ready := map[string][]fleet.Prepared{}
	kept := map[string]int{} // by pool: creating or ready, not going
	keptAll, preparing := 0, 0
	for _, x := range s.Prepared {
		p := cfg.pool(x.Pool)
		why := ""
		switch {
		case x.State == fleet.PreparedDeleting:
			continue
		case x.State == fleet.PreparedCreating:
			kept[x.Pool]++
			keptAll++
			preparing++
			continue
		case p == nil:
			why = "its pool is no longer configured"
		case x.Image != "" && s.Images[p.Image] != "" && x.Image != s.Images[p.Image]:
			why = "image " + p.Image + " changed"
		case p.MaxIdleAge > 0 && !s.Now.Before(x.CreatedAt.Add(p.MaxIdleAge)):
			why = "older than max_idle_age"
		case kept[x.Pool] >= p.Prepared || (cfg.MaxPrepared > 0 && keptAll >= cfg.MaxPrepared):
			why = "more than the pool keeps prepared"
		}
		if why == "" {
			_, why = pl.retiring(fleet.Runner{Name: x.Name})
		}
		if why != "" {
			// On a member that does not answer it waits for the member.
			if _, lost := pl.lost(fleet.Runner{Name: x.Name}); !lost {
				d.Unprepares = append(d.Unprepares, Unprepare{Name: x.Name, Reason: why})
			}
			continue
		}
		kept[x.Pool]++
		keptAll++
		ready[x.Pool] = append(ready[x.Pool], x)
	}
	launching += preparing // making one is an LXD operation in flight too
	// take returns a prepared instance of p that a launch may take now,
	// and its member.
	take := func(p *Pool) (string, string, bool) {
		for i, x := range ready[p.Name] {
			member := ""
			if pl != nil && pl.Clustered {
				m, ok := pl.member(pl.Where[x.Name])
				if !ok || pl.refuses(cfg, m, onMember) != "" {
					continue
				}
				member = m.Name
			}
			ready[p.Name] = append(ready[p.Name][:i:i], ready[p.Name][i+1:]...)
			kept[p.Name]--
			keptAll--
			return x.Name, member, true
		}
		return "", "", false
	}

	// Runners whose instances are being deleted for good (their job is
	// done, or a timer forced it): each frees a slot soon, which one launch
	// may wait for while it asks GitHub for its JIT config. Not on a
	// cluster, whose limits are per member too.
	var freeing []fleet.Runner
	if pl == nil || !pl.Clustered {
		for _, r := range live {
			if r.State == fleet.RunnerDeleting && (r.DeleteMode == fleet.ModeJobDone || r.DeleteMode == fleet.ModeForce) && !s.Paired[r.Name] {
				freeing = append(freeing, r)
			}
		}
	}
	// pair returns a freeing runner whose slot a launch of p can wait
	// for: one of p's own when p is at its own limit.
	pair := func(p *Pool) (string, bool) {
		atPool := p.MaxInstances > 0 && poolTotal[p.Name] >= p.MaxInstances
		for i, r := range freeing {
			if atPool && r.Pool != p.Name {
				continue
			}
			freeing = append(freeing[:i:i], freeing[i+1:]...)
			return r.Name, true
		}
		return "", false
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
		if s.Now.Before(s.NotBefore[p.Name]) || s.Drained[p.Name] || launching >= cfg.MaxLaunching {
			continue
		}
		l := Launch{Pool: p.Name, Org: j.Org, InstallationID: j.InstallationID, JobID: j.ID}
		if total >= cfg.MaxInstances || (p.MaxInstances > 0 && poolTotal[p.Name] >= p.MaxInstances) {
			after, ok := pair(p)
			if !ok {
				continue
			}
			l.After = after
		}
		if name, member, ok := take(p); ok {
			l.Prepared, l.Member = name, member
		} else {
			member, why, ok := place(p)
			if !ok {
				d.Waiting[j.ID] = why
				continue
			}
			l.Member = member
		}
		launch(l)
		covered[b]++
		launched[b]++
	}

	// Warm pools: min_idle unassigned runners beyond the queued jobs, per
	// organization, after the queued jobs had their turn at the limits.
	warm := map[bucket]int{}
	for _, o := range s.Orgs {
		for i := range cfg.Pools {
			p := &cfg.Pools[i]
			if p.MinIdle == 0 || !p.serves(o.Login) {
				continue
			}
			b := bucket{p.Name, o.Login}
			warm[b] = p.MinIdle
			for unassigned[b]+launched[b] < queued[b]+p.MinIdle {
				if s.Now.Before(s.NotBefore[p.Name]) || s.Drained[p.Name] || total >= cfg.MaxInstances || launching >= cfg.MaxLaunching ||
					(p.MaxInstances > 0 && poolTotal[p.Name] >= p.MaxInstances) {
					break
				}
				l := Launch{Pool: p.Name, Org: o.Login, InstallationID: o.InstallationID}
				if name, member, ok := take(p); ok {
					l.Prepared, l.Member = name, member
				} else if member, _, ok := place(p); ok {
					l.Member = member
				} else {
					break
				}
				launch(l)
				launched[b]++
			}
		}
	}

	// Prepared instances: each pool keeps its count, within
	// limits.max_prepared, made a few at a time and only when launches
	// leave room: they are for the next jobs, not these.
	for i := range cfg.Pools {
		p := &cfg.Pools[i]
		for kept[p.Name] < p.Prepared && (cfg.MaxPrepared == 0 || keptAll < cfg.MaxPrepared) &&
			preparing < maxPreparing && launching < cfg.MaxLaunching &&
			!s.Now.Before(s.PrepareNotBefore[p.Name]) && !s.Drained[p.Name] {
			member, _, ok := place(p)
			if !ok {
				break
			}
			d.Prepares = append(d.Prepares, Prepare{Pool: p.Name, Member: member})
			kept[p.Name]++
			keptAll++
			preparing++
			launching++
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

// maxPreparing caps the prepared instances being made at once: making one
// unpacks an image, which costs the disk that launches need too.
const maxPreparing = 2

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
