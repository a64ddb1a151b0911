package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Placement is the LXD cluster as Decide sees it. With it, the scheduler
// places each runner itself, on a member it names: one that can run the
// pool's instances (its target, its architecture, the member's
// scheduler.instance), that answers, that no operator drains or
// evacuates, and that is under every limits.targets limit; so a drained
// member gets nothing, a dead one is skipped at once, and limits that
// pools share hold. Nil when the scheduler has no Cluster port or has not
// read LXD yet: then LXD places runners, by the pool's target.
type Placement struct {
	Clustered bool
	// Members as LXD has them; a member the scheduler found unreachable
	// is offline here.
	Members []fleet.Member
	Drained map[string]bool   // members an operator drained
	Where   map[string]string // live runner -> the member that holds it, when known
	// Arch is the architecture each pool's instances get ("" while
	// unknown: then it does not narrow the members); ArchErr says why a
	// pool's architecture cannot be had (its image is missing).
	Arch    map[string]string
	ArchErr map[string]string
}

// lost reports the member of a runner whose member does not answer: its
// instance cannot be reached, and it is neither capacity nor a warm
// runner.
func (pl *Placement) lost(r fleet.Runner) (string, bool) {
	if pl == nil {
		return "", false
	}
	m, ok := pl.member(pl.Where[r.Name])
	return m.Name, ok && m.Status == fleet.MemberOffline
}

// retiring reports the member, drained or evacuated, that an idle runner
// must leave.
func (pl *Placement) retiring(r fleet.Runner) (member, why string) {
	if pl == nil {
		return "", ""
	}
	m, ok := pl.member(pl.Where[r.Name])
	switch {
	case !ok:
		return "", ""
	case pl.Drained[m.Name]:
		return m.Name, "member " + m.Name + " is drained"
	case m.Status == fleet.MemberEvacuated:
		return m.Name, "member " + m.Name + " is evacuated"
	}
	return "", ""
}

func (pl *Placement) member(name string) (fleet.Member, bool) {
	if name == "" {
		return fleet.Member{}, false
	}
	for _, m := range pl.Members {
		if m.Name == name {
			return m, true
		}
	}
	return fleet.Member{}, false
}

// candidates returns the members that can ever run pool p's instances,
// whatever their state now, or why none can: a target that names no
// member or an empty group, an architecture no member runs, a missing
// image.
func (pl *Placement) candidates(p *Pool) ([]fleet.Member, string) {
	if why := pl.ArchErr[p.Name]; why != "" {
		return nil, why
	}
	var in []fleet.Member
	where := "cluster member"
	switch t := p.Target; {
	case !pl.Clustered && t != "":
		return nil, fmt.Sprintf("target %q: LXD is not a cluster", t)
	case !pl.Clustered:
		in = pl.Members
		where = "LXD server"
	case t == "":
		for _, m := range pl.Members {
			if m.Placement == "" || m.Placement == fleet.PlacementAll {
				in = append(in, m)
			}
		}
		if len(in) == 0 {
			return nil, "no cluster member takes instances that do not name it (scheduler.instance): set the pool's target"
		}
	case strings.HasPrefix(t, "@"):
		g := t[1:]
		for _, m := range pl.Members {
			if slices.Contains(m.Groups, g) && m.Placement != fleet.PlacementManual {
				in = append(in, m)
			}
		}
		if len(in) == 0 {
			return nil, fmt.Sprintf("target %s: cluster group %s has no member that takes its instances", t, g)
		}
		where = "member of " + t
	default:
		m, ok := pl.member(t)
		if !ok {
			return nil, fmt.Sprintf("target %s: no such cluster member", t)
		}
		in = []fleet.Member{m}
		where = "target " + t
	}
	arch := pl.Arch[p.Name]
	if arch == "" {
		return in, ""
	}
	var out []fleet.Member
	runs := map[string]bool{}
	for _, m := range in {
		if slices.Contains(m.Architectures, arch) {
			out = append(out, m)
		}
		if len(m.Architectures) > 0 {
			runs[m.Architectures[0]] = true
		}
	}
	if len(out) == 0 {
		have := slices.Sorted(maps.Keys(runs))
		they := "they run"
		if len(in) == 1 {
			they = "it runs"
		}
		return nil, fmt.Sprintf("no %s runs architecture %s (%s %s)", where, arch, they, strings.Join(have, ", "))
	}
	return out, ""
}

// place picks the member for one more runner of pool p: among its
// candidates, those online, not drained and under every limit of
// limits.targets, the one holding fewest of our runners (then LXD's
// order). onMember counts our runners by member. why says why none.
func (pl *Placement) place(cfg Config, p *Pool, onMember map[string]int) (member, why string) {
	cands, why := pl.candidates(p)
	if why != "" {
		return "", why
	}
	var refused []string
	best := -1
	for i, m := range cands {
		if reason := pl.refuses(cfg, m, onMember); reason != "" {
			refused = append(refused, reason)
			continue
		}
		if best < 0 || onMember[m.Name] < onMember[cands[best].Name] {
			best = i
		}
	}
	if best < 0 {
		return "", "no member can take a runner now: " + strings.Join(refused, "; ")
	}
	return cands[best].Name, ""
}

// refuses says why member m takes no new runner now, or "".
func (pl *Placement) refuses(cfg Config, m fleet.Member, onMember map[string]int) string {
	switch {
	case m.Status == fleet.MemberOffline:
		return m.Name + " does not answer"
	case m.Status == fleet.MemberEvacuated:
		return m.Name + " is evacuated"
	case m.Status != fleet.MemberOnline:
		return m.Name + " is " + string(m.Status)
	case pl.Drained[m.Name]:
		return m.Name + " is drained"
	}
	if n, ok := cfg.TargetLimits[m.Name]; ok && onMember[m.Name] >= n {
		return fmt.Sprintf("%s holds its limit of %d runners", m.Name, n)
	}
	for _, g := range m.Groups {
		n, ok := cfg.TargetLimits["@"+g]
		if !ok {
			continue
		}
		used := 0
		for _, o := range pl.Members {
			if slices.Contains(o.Groups, g) {
				used += onMember[o.Name]
			}
		}
		if used >= n {
			return fmt.Sprintf("%s: @%s holds its limit of %d runners", m.Name, g, n)
		}
	}
	return ""
}

// Unplaceable returns, by pool, why no LXD member can ever run its
// instances (its target names no member or an empty group, no member runs
// its architecture, its image is missing), for a check before start. arch
// and archErr are as in Placement.
func Unplaceable(cfg Config, topo fleet.Topology, arch, archErr map[string]string) map[string]string {
	pl := &Placement{Clustered: topo.Clustered, Members: topo.Members, Arch: arch, ArchErr: archErr}
	out := map[string]string{}
	for i := range cfg.Pools {
		if _, why := pl.candidates(&cfg.Pools[i]); why != "" {
			out[cfg.Pools[i].Name] = why
		}
	}
	return out
}
