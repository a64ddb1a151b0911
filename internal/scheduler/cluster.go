package scheduler

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// suspectFor is how long a member that refused a launch for want of an
// answer gets no new runner, unless LXD's members say sooner that it is
// offline (about 20 s of missed heartbeats) or, once it is back, online.
const suspectFor = 30 * time.Second

// cluster is what the scheduler knows of LXD's members: read every
// ClusterInterval off the loop, and where its runners are, from its own
// launches and from each reconcile's listing.
type cluster struct {
	port fleet.Cluster // nil: LXD places runners by the pools' targets

	mu       sync.Mutex
	known    bool // a topology was read
	topo     fleet.Topology
	arch     map[string]string    // pool -> the architecture its instances get
	archErr  map[string]string    // pool -> why that cannot be had
	suspect  map[string]time.Time // member -> no new runner before
	where    map[string]string    // runner -> member
	blocked  map[string]string    // pool -> why no member can run it, as last logged
	reported map[string]bool      // busy runners reported lost
}

func newCluster(port fleet.Cluster) *cluster {
	return &cluster{port: port, arch: map[string]string{}, archErr: map[string]string{}, suspect: map[string]time.Time{},
		where: map[string]string{}, blocked: map[string]string{}, reported: map[string]bool{}}
}

// refreshCluster reads LXD's members and, with pools set, the
// architecture of each pool's instances. A failed read keeps what was
// known. It logs each member that changes state and each pool that no
// member can run (or can again), and wakes the loop when something
// changed.
func (s *Scheduler) refreshCluster(ctx context.Context, pools bool) {
	c := s.cl
	if c.port == nil {
		return
	}
	topo, err := c.port.Topology(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("read lxd cluster members; keeping what was known")
		return
	}
	arch, archErr := map[string]string{}, map[string]string{}
	c.mu.Lock()
	maps.Copy(arch, c.arch)
	maps.Copy(archErr, c.archErr)
	c.mu.Unlock()
	for _, p := range s.cfg.Pools {
		if _, known := arch[p.Name]; known && !pools {
			continue
		}
		a, err := c.port.Architecture(ctx, p.Architecture, p.Image, p.SourceInstance)
		switch {
		case err == nil:
			arch[p.Name] = a
			delete(archErr, p.Name)
		case errors.Is(err, fleet.ErrUnreachable):
			// Try again next time.
		default:
			arch[p.Name] = ""
			archErr[p.Name] = err.Error()
		}
	}

	c.mu.Lock()
	changed := !c.known || !slices.EqualFunc(c.topo.Members, topo.Members, func(a, b fleet.Member) bool {
		return a.Name == b.Name && a.Status == b.Status && slices.Equal(a.Groups, b.Groups)
	}) || !maps.Equal(c.arch, arch) || !maps.Equal(c.archErr, archErr)
	old := c.topo
	c.topo, c.known, c.arch, c.archErr = topo, true, arch, archErr
	now := s.clock.Now()
	for m, until := range c.suspect {
		// LXD's own word replaces the suspicion: offline, or online again
		// after it was offline.
		mem, ok := topo.Member(m)
		was, _ := old.Member(m)
		if !now.Before(until) || (ok && mem.Status == fleet.MemberOffline) ||
			(ok && mem.Status == fleet.MemberOnline && was.Status == fleet.MemberOffline) {
			delete(c.suspect, m)
		}
	}
	c.mu.Unlock()
	if !changed {
		return
	}
	for _, m := range topo.Members {
		was, ok := old.Member(m.Name)
		if ok && was.Status == m.Status {
			continue
		}
		ev := s.log.Info()
		if m.Status == fleet.MemberOffline {
			ev = s.log.Warn()
		}
		ev.Str("member", m.Name).Str("status", string(m.Status)).Str("was", string(was.Status)).Str("why", m.Message).Msg("lxd cluster member")
	}
	s.logBlocked()
	s.Notify()
}

// logBlocked logs, once per change, each pool that no member can run and
// each that can be run again.
func (s *Scheduler) logBlocked() {
	pl := s.placement(nil)
	if pl == nil {
		return
	}
	for i := range s.cfg.Pools {
		p := &s.cfg.Pools[i]
		_, why := pl.candidates(p)
		s.cl.mu.Lock()
		was := s.cl.blocked[p.Name]
		s.cl.blocked[p.Name] = why
		s.cl.mu.Unlock()
		switch {
		case why == was:
		case why != "":
			s.log.Error().Str("pool", p.Name).Str("reason", why).Msg("pool launches nothing: no LXD member can run its instances; its jobs stay queued")
		default:
			s.log.Info().Str("pool", p.Name).Msg("pool can be placed again")
		}
	}
}

// placement is the cluster for Decide: nil without a Cluster port or
// before LXD was read. A member under suspicion is offline in it.
func (s *Scheduler) placement(drained map[string]bool) *Placement {
	c := s.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.port == nil || !c.known {
		return nil
	}
	now := s.clock.Now()
	pl := &Placement{Clustered: c.topo.Clustered, Drained: drained, Where: maps.Clone(c.where),
		Arch: maps.Clone(c.arch), ArchErr: maps.Clone(c.archErr)}
	for _, m := range c.topo.Members {
		if until, ok := c.suspect[m.Name]; ok && now.Before(until) && m.Status == fleet.MemberOnline {
			m.Status, m.Message = fleet.MemberOffline, "a launch there found it not answering"
		}
		pl.Members = append(pl.Members, m)
	}
	return pl
}

// suspectMember keeps new runners off member for a while: a launch there
// found that it does not answer.
func (s *Scheduler) suspectMember(member string) {
	s.cl.mu.Lock()
	s.cl.suspect[member] = s.clock.Now().Add(suspectFor)
	s.cl.mu.Unlock()
	s.log.Warn().Str("member", member).Msg("lxd cluster member does not answer; no runner goes there until it does")
	s.Notify()
}

// setWhere records the member a runner was launched on.
func (s *Scheduler) setWhere(runner, member string) {
	s.cl.mu.Lock()
	s.cl.where[runner] = member
	s.cl.mu.Unlock()
}

// lostMember reports the member of a runner when that member does not
// answer: nothing can be done to its instance until it does.
func (s *Scheduler) lostMember(runner string) (string, bool) {
	pl := s.placement(nil)
	if pl == nil {
		return "", false
	}
	return pl.lost(fleet.Runner{Name: runner})
}

// noteInstances learns, from a listing of our instances, where each is,
// and suspects the members whose instances LXD cannot tell about (status
// Error: the member does not answer it).
func (s *Scheduler) noteInstances(insts []fleet.Instance) {
	c := s.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.clock.Now()
	answers := map[string]bool{}
	for _, in := range insts {
		if in.Location == "" {
			continue
		}
		c.where[in.Name] = in.Location
		if in.State == fleet.InstanceError && c.topo.Clustered {
			c.suspect[in.Location] = now.Add(suspectFor)
			answers[in.Location] = false
		} else if _, seen := answers[in.Location]; !seen {
			answers[in.Location] = true
		}
	}
	// A member whose instances LXD can tell about again answers.
	for m, ok := range answers {
		if ok {
			delete(c.suspect, m)
		}
	}
}

// forgetRunners forgets where runners were, but for those in keep.
func (s *Scheduler) forgetRunners(keep func(string) bool) {
	c := s.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.where {
		if !keep(name) {
			delete(c.where, name)
			delete(c.reported, name)
		}
	}
}

// firstReport reports whether a lost busy runner is reported for the
// first time, and marks it reported.
func (s *Scheduler) firstReport(runner string) bool {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	if s.cl.reported[runner] {
		return false
	}
	s.cl.reported[runner] = true
	return true
}
