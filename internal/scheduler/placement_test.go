package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// A three-member cluster: node1 and node2 in group cpu, node3 alone in
// group gpu; all x86_64.
func testCluster() *Placement {
	x86 := []string{"x86_64", "i686"}
	return &Placement{
		Clustered: true,
		Members: []fleet.Member{
			{Name: "node1", Architectures: x86, Groups: []string{"default", "cpu"}, Status: fleet.MemberOnline, Placement: fleet.PlacementAll},
			{Name: "node2", Architectures: x86, Groups: []string{"default", "cpu"}, Status: fleet.MemberOnline, Placement: fleet.PlacementAll},
			{Name: "node3", Architectures: x86, Groups: []string{"gpu"}, Status: fleet.MemberOnline, Placement: fleet.PlacementAll},
		},
		Drained: map[string]bool{},
		Where:   map[string]string{},
		Arch:    map[string]string{"cpu": "x86_64", "gpu-a": "x86_64", "gpu-b": "x86_64", "arm": "aarch64"},
		ArchErr: map[string]string{},
	}
}

func clusterConfig() Config {
	return Config{
		MaxInstances: 20,
		TargetLimits: map[string]int{"@gpu": 2},
		Pools: []Pool{
			{Name: "cpu", Labels: []string{"cpu"}, Image: "img", Target: "@cpu"},
			{Name: "gpu-a", Labels: []string{"gpu-a"}, Image: "img", Target: "@gpu"},
			{Name: "gpu-b", Labels: []string{"gpu-b"}, Image: "img", Target: "node3"},
			{Name: "arm", Labels: []string{"arm"}, Image: "img", Architecture: "aarch64"},
			{Name: "any", Labels: []string{"any"}, Image: "img"},
		},
	}.WithDefaults()
}

func jobsIn(pools ...string) []fleet.Job {
	var out []fleet.Job
	for i, p := range pools {
		out = append(out, fleet.Job{ID: int64(100 + i), Pool: p, Org: "acme", InstallationID: 1, State: fleet.JobQueued, QueuedAt: t0})
	}
	return out
}

// launches renders Decide's launches as "pool@member", in order.
func launches(d Decision) string {
	var out []string
	for _, l := range d.Launches {
		out = append(out, l.Pool+"@"+l.Member)
	}
	return strings.Join(out, " ")
}

func TestPlacement(t *testing.T) {
	cfg := clusterConfig()
	runner := func(name, pool, member string, state fleet.RunnerState, pl *Placement) fleet.Runner {
		pl.Where[name] = member
		return fleet.Runner{Name: name, Pool: pool, Org: "acme", State: state, CreatedAt: t0, StartedAt: t0, OnlineAt: t0, BusyAt: t0}
	}
	tests := []struct {
		name     string
		queued   []string
		setup    func(pl *Placement) []fleet.Runner
		want     string   // launches, "pool@member" in order
		waiting  []string // substrings of the reasons given, by job in order ("" for none)
		teardown []string // "runner: reason substring"
		lost     []string
	}{
		{
			name:   "each pool on its group's members, spread by our runners there",
			queued: []string{"cpu", "cpu", "cpu", "gpu-a"},
			setup: func(pl *Placement) []fleet.Runner {
				return []fleet.Runner{runner("r1", "cpu", "node1", fleet.RunnerBusy, pl)}
			},
			want: "cpu@node2 cpu@node1 cpu@node2 gpu-a@node3",
		},
		{
			name:    "a group limit holds across the pools that share its members",
			queued:  []string{"gpu-a", "gpu-b", "gpu-a", "cpu"},
			want:    "gpu-a@node3 gpu-b@node3 cpu@node1",
			waiting: []string{"", "", "node3: @gpu holds its limit of 2 runners", ""},
		},
		{
			name:   "busy runners count against the group limit",
			queued: []string{"gpu-b"},
			setup: func(pl *Placement) []fleet.Runner {
				return []fleet.Runner{runner("r1", "gpu-a", "node3", fleet.RunnerBusy, pl), runner("r2", "gpu-a", "node3", fleet.RunnerBusy, pl)}
			},
			waiting: []string{"@gpu holds its limit of 2"},
		},
		{
			name:    "an architecture no member runs: nothing, and why, whatever the limits",
			queued:  []string{"arm", "cpu"},
			want:    "cpu@node1",
			waiting: []string{"no cluster member runs architecture aarch64 (they run x86_64)", ""},
		},
		{
			name:   "a drained member gets nothing, and its idle runner is retired",
			queued: []string{"cpu", "cpu"},
			setup: func(pl *Placement) []fleet.Runner {
				pl.Drained["node1"] = true
				return []fleet.Runner{runner("idle", "cpu", "node1", fleet.RunnerStarted, pl), runner("busy", "cpu", "node1", fleet.RunnerBusy, pl)}
			},
			// One job is covered by the idle runner until it goes.
			want:     "cpu@node2",
			teardown: []string{"member node1 is drained"},
		},
		{
			name:   "an evacuated member likewise",
			queued: []string{"gpu-a", "gpu-a"},
			setup: func(pl *Placement) []fleet.Runner {
				pl.Members[2].Status = fleet.MemberEvacuated
				return []fleet.Runner{runner("idle", "gpu-a", "node3", fleet.RunnerStarted, pl)}
			},
			waiting:  []string{"", "no member can take a runner now: node3 is evacuated"},
			teardown: []string{"member node3 is evacuated"},
		},
		{
			name:   "a member that does not answer: its runners are no capacity, no slot, and busy ones are reported lost",
			queued: []string{"cpu", "cpu"},
			setup: func(pl *Placement) []fleet.Runner {
				pl.Members[0].Status = fleet.MemberOffline
				return []fleet.Runner{
					runner("idle", "cpu", "node1", fleet.RunnerStarted, pl),
					runner("busy", "cpu", "node1", fleet.RunnerBusy, pl),
					runner("launching", "cpu", "node1", fleet.RunnerLaunching, pl),
				}
			},
			want:     "cpu@node2 cpu@node2",
			teardown: []string{"idle: member node1 does not answer"},
			lost:     []string{"busy@node1"},
		},
		{
			name:    "a target that names no member",
			queued:  []string{"cpu"},
			setup:   func(pl *Placement) []fleet.Runner { pl.Members = pl.Members[2:]; return nil },
			waiting: []string{"target @cpu: cluster group cpu has no member"},
		},
		{
			name:   "no target: members that take any instance, not those kept for groups or by name",
			queued: []string{"any", "any"},
			setup: func(pl *Placement) []fleet.Runner {
				pl.Members[0].Placement = fleet.PlacementManual
				pl.Members[1].Placement = fleet.PlacementGroup
				return nil
			},
			want: "any@node3 any@node3",
		},
		{
			name:    "a missing image",
			queued:  []string{"cpu"},
			setup:   func(pl *Placement) []fleet.Runner { pl.ArchErr["cpu"] = "image img: not found"; return nil },
			waiting: []string{"image img: not found"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := testCluster()
			var rs []fleet.Runner
			if tt.setup != nil {
				rs = tt.setup(pl)
			}
			d := Decide(cfg, Snapshot{Now: t0.Add(time.Minute), Queued: jobsIn(tt.queued...), Runners: rs, Placement: pl})
			if got := launches(d); got != tt.want {
				t.Errorf("launches = %q, want %q", got, tt.want)
			}
			for i, want := range tt.waiting {
				got := d.Waiting[int64(100+i)]
				if (want == "") != (got == "") || !strings.Contains(got, want) {
					t.Errorf("job %d waits for %q, want %q", 100+i, got, want)
				}
			}
			var torn []string
			for _, td := range d.Teardowns {
				torn = append(torn, td.Runner+": "+td.Reason)
			}
			if len(torn) != len(tt.teardown) {
				t.Errorf("teardowns = %q, want %q", torn, tt.teardown)
			}
			for _, want := range tt.teardown {
				if !slices.ContainsFunc(torn, func(s string) bool { return strings.Contains(s, want) }) {
					t.Errorf("teardowns = %q, want one with %q", torn, want)
				}
			}
			var lost []string
			for _, l := range d.Lost {
				lost = append(lost, l.Runner+"@"+l.Member)
			}
			if fmt.Sprint(lost) != fmt.Sprint(tt.lost) && len(lost)+len(tt.lost) > 0 {
				t.Errorf("lost = %q, want %q", lost, tt.lost)
			}
		})
	}
}

// Runners on a member that does not answer hold no slot of the global
// limit either: the healthy members take the queue.
func TestLostRunnersHoldNoSlot(t *testing.T) {
	cfg := clusterConfig()
	cfg.MaxInstances = 2
	pl := testCluster()
	pl.Members[0].Status = fleet.MemberOffline
	var rs []fleet.Runner
	for i := range 2 {
		name := fmt.Sprint("b", i)
		pl.Where[name] = "node1"
		rs = append(rs, fleet.Runner{Name: name, Pool: "cpu", Org: "acme", State: fleet.RunnerBusy, BusyAt: t0})
	}
	d := Decide(cfg, Snapshot{Now: t0, Queued: jobsIn("cpu", "cpu", "cpu"), Runners: rs, Placement: pl})
	if got := launches(d); got != "cpu@node2 cpu@node2" {
		t.Fatalf("launches = %q, want two on node2 (the limit), none counted for node1's", got)
	}
}

// Without a cluster view, LXD places runners by the pool's target, as
// before: no member is named.
func TestNoPlacementWithoutCluster(t *testing.T) {
	d := Decide(clusterConfig(), Snapshot{Now: t0, Queued: jobsIn("gpu-a", "arm")})
	if got := launches(d); got != "gpu-a@ arm@" || len(d.Waiting) != 0 {
		t.Fatalf("launches = %q, waiting %v", got, d.Waiting)
	}
}

// A standalone LXD: the one server runs what its architectures allow,
// and a target cannot be had.
func TestPlacementOnStandaloneServer(t *testing.T) {
	cfg := clusterConfig()
	pl := &Placement{Members: []fleet.Member{{Name: "host", Architectures: []string{"x86_64", "i686"}, Status: fleet.MemberOnline}},
		Where: map[string]string{}, Arch: map[string]string{"any": "x86_64", "arm": "aarch64"}}
	d := Decide(cfg, Snapshot{Now: t0, Queued: jobsIn("any", "arm", "cpu"), Placement: pl})
	if got := launches(d); got != "any@" {
		t.Fatalf("launches = %q, want one that names no member (a standalone server takes no target)", got)
	}
	if w := d.Waiting[101]; !strings.Contains(w, "no LXD server runs architecture aarch64") {
		t.Errorf("arm waits for %q", w)
	}
	if w := d.Waiting[102]; !strings.Contains(w, `target "@cpu": LXD is not a cluster`) {
		t.Errorf("cpu waits for %q", w)
	}
}
