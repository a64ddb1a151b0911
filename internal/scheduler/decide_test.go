package scheduler

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

func TestLabelsCover(t *testing.T) {
	pool := []string{"self-hosted", "Linux", "x64", "gpu"}
	tests := []struct {
		name string
		job  []string
		want bool
	}{
		{"exact", []string{"self-hosted", "linux", "x64", "gpu"}, true},
		{"subset", []string{"self-hosted", "gpu"}, true},
		{"case-insensitive", []string{"SELF-HOSTED", "linux", "GPU"}, true},
		{"order does not matter", []string{"gpu", "x64", "self-hosted"}, true},
		{"one label missing", []string{"self-hosted", "arm64"}, false},
		{"github-hosted", []string{"ubuntu-latest"}, false},
		{"typo", []string{"self-hosted", "linx"}, false},
		{"no labels", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := labelsCover(pool, tt.job); got != tt.want {
				t.Fatalf("labelsCover(%v) = %v, want %v", tt.job, got, tt.want)
			}
		})
	}
}

func testConfig() Config {
	return Config{
		MaxInstances: 4,
		Pools: []Pool{
			{Name: "linux", Labels: []string{"self-hosted", "linux", "x64"}, Image: "img"},
			{Name: "gpu", Labels: []string{"self-hosted", "linux", "x64", "gpu"}, Image: "img", MaxInstances: 1},
			{Name: "public", Labels: []string{"self-hosted", "public"}, Image: "img", AllowPublicRepositories: true},
			{Name: "only-tools", Labels: []string{"tools"}, Image: "img", Repositories: []string{"acme/tools", "infra"}},
		},
	}.WithDefaults()
}

func TestRoute(t *testing.T) {
	cfg := testConfig()
	tests := []struct {
		name   string
		labels []string
		repo   string
		public bool
		want   string
		reason string
	}{
		{"first pool in config order wins", []string{"self-hosted"}, "acme/a", false, "linux", ""},
		{"more specific labels pick a later pool", []string{"self-hosted", "gpu"}, "acme/a", false, "gpu", ""},
		{"public repository refused", []string{"self-hosted", "linux"}, "acme/a", true, "", ReasonPublicRepository},
		{"public repository admitted by a pool that allows it", []string{"self-hosted", "public"}, "acme/a", true, "public", ""},
		{"allow-list by full name", []string{"tools"}, "acme/tools", false, "only-tools", ""},
		{"allow-list by bare name", []string{"tools"}, "acme/infra", false, "only-tools", ""},
		{"not in allow-list", []string{"tools"}, "acme/other", false, "", ReasonRepositoryNotAllowed},
		{"no pool", []string{"ubuntu-latest"}, "acme/a", false, "", ReasonNoPool},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, reason := cfg.route(tt.labels, "acme", tt.repo, tt.public)
			got := ""
			if p != nil {
				got = p.Name
			}
			if got != tt.want || reason != tt.reason {
				t.Fatalf("route = %q %q, want %q %q", got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	bad := Config{
		MaxInstances: 0,
		Pools: []Pool{
			{Name: "Bad_Name", Labels: nil},
			{Name: "a", Labels: []string{"x"}, Image: "i", SourceInstance: "s", Type: "vm",
				Config: map[string]string{"user.runner.pool": "x"}},
			{Name: "a", Labels: []string{"x"}, Image: "i"},
			{Name: "b", Labels: []string{"x"}, Image: "i", RunnerGroup: " gpu", RunnerGroupPolicy: "ignore"},
		},
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"max_instances", "lowercase", "labels are required", "exactly one of image or source_instance",
		"type must be", "reserved", "duplicate pool name", `pools[3] (b): runner_group_policy must be refuse or warn, not "ignore"`,
		`pools[3] (b): runner_group " gpu": leading or trailing spaces`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if err := testConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

var t0 = fleettest.T0

func queuedJobs(pool string, n int) []fleet.Job {
	var out []fleet.Job
	for i := 0; i < n; i++ {
		out = append(out, fleet.Job{ID: int64(100 + i), Pool: pool, Org: "acme", InstallationID: 1, State: fleet.JobQueued,
			QueuedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	return out
}

func runners(pool string, state fleet.RunnerState, n int) []fleet.Runner {
	var out []fleet.Runner
	for i := 0; i < n; i++ {
		out = append(out, fleet.Runner{Name: fmt.Sprintf("%s-%s-%d", pool, state, i), Pool: pool, Org: "acme", State: state,
			CreatedAt: t0, StartedAt: t0, BusyAt: t0})
	}
	return out
}

func cat[T any](xs ...[]T) []T {
	var out []T
	for _, x := range xs {
		out = append(out, x...)
	}
	return out
}

func TestDecide(t *testing.T) {
	cfg := testConfig()
	tests := []struct {
		name      string
		snap      Snapshot
		launches  int
		teardowns map[fleet.DeleteMode]int // mode -> count
	}{
		{"idle: nothing", Snapshot{Now: t0}, 0, nil},
		{"one queued, no runner: launch", Snapshot{Now: t0, Queued: queuedJobs("linux", 1)}, 1, nil},
		{"queued job covered by a launching runner", Snapshot{Now: t0, Queued: queuedJobs("linux", 1),
			Runners: runners("linux", fleet.RunnerLaunching, 1)}, 0, nil},
		{"queued job covered by a started runner", Snapshot{Now: t0, Queued: queuedJobs("linux", 2),
			Runners: runners("linux", fleet.RunnerStarted, 2)}, 0, nil},
		{"busy runners do not cover queued jobs", Snapshot{Now: t0, Queued: queuedJobs("linux", 2),
			Runners: runners("linux", fleet.RunnerBusy, 2)}, 2, nil},
		{"global limit caps launches", Snapshot{Now: t0, Queued: queuedJobs("linux", 10)}, 4, nil},
		{"global limit counts busy and deleting", Snapshot{Now: t0, Queued: queuedJobs("linux", 10),
			Runners: cat(runners("linux", fleet.RunnerBusy, 2), runners("linux", fleet.RunnerDeleting, 1))}, 1, nil},
		{"pool limit", Snapshot{Now: t0, Queued: queuedJobs("gpu", 3)}, 1, nil},
		{"pool at its limit does not block another pool", Snapshot{Now: t0,
			Queued:  cat(queuedJobs("gpu", 2), queuedJobs("linux", 1)),
			Runners: runners("gpu", fleet.RunnerBusy, 1)}, 1, nil},
		{"backoff holds a pool", Snapshot{Now: t0, Queued: queuedJobs("linux", 2),
			NotBefore: map[string]time.Time{"linux": t0.Add(time.Second)}}, 0, nil},
		{"backoff over", Snapshot{Now: t0.Add(time.Second), Queued: queuedJobs("linux", 2),
			NotBefore: map[string]time.Time{"linux": t0.Add(time.Second)}}, 2, nil},
		{"surplus started runner torn down", Snapshot{Now: t0, Queued: queuedJobs("linux", 1),
			Runners: runners("linux", fleet.RunnerStarted, 3)}, 0, map[fleet.DeleteMode]int{fleet.ModeSurplus: 2}},
		{"launching runners are never surplus candidates", Snapshot{Now: t0,
			Runners: runners("linux", fleet.RunnerLaunching, 2)}, 0, nil},
		{"registration timeout", Snapshot{Now: t0.Add(DefaultRegistrationTimeout), Queued: queuedJobs("linux", 1),
			Runners: runners("linux", fleet.RunnerStarted, 1)}, 0, map[fleet.DeleteMode]int{fleet.ModeRegistration: 1}},
		{"registration timer not yet", Snapshot{Now: t0.Add(DefaultRegistrationTimeout - time.Second), Queued: queuedJobs("linux", 1),
			Runners: runners("linux", fleet.RunnerStarted, 1)}, 0, nil},
		{"max job duration", Snapshot{Now: t0.Add(DefaultMaxJobDuration),
			Runners: runners("linux", fleet.RunnerBusy, 1)}, 0, map[fleet.DeleteMode]int{fleet.ModeForce: 1}},
		{"busy runner under the limit is kept", Snapshot{Now: t0.Add(DefaultMaxJobDuration - time.Minute),
			Runners: runners("linux", fleet.RunnerBusy, 1)}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(cfg, tt.snap)
			if len(d.Launches) != tt.launches {
				t.Errorf("launches = %d, want %d: %+v", len(d.Launches), tt.launches, d.Launches)
			}
			got := map[fleet.DeleteMode]int{}
			for _, td := range d.Teardowns {
				got[td.Mode]++
			}
			if fmt.Sprint(got) != fmt.Sprint(orEmpty(tt.teardowns)) {
				t.Errorf("teardowns = %v, want %v", got, tt.teardowns)
			}
		})
	}
}

func orEmpty(m map[fleet.DeleteMode]int) map[fleet.DeleteMode]int {
	if m == nil {
		return map[fleet.DeleteMode]int{}
	}
	return m
}

func TestDecideFIFOAcrossPools(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInstances = 1
	older := fleet.Job{ID: 1, Pool: "gpu", Org: "acme", QueuedAt: t0}
	newer := fleet.Job{ID: 2, Pool: "linux", Org: "acme", QueuedAt: t0.Add(time.Second)}
	d := Decide(cfg, Snapshot{Now: t0, Queued: []fleet.Job{older, newer}})
	if len(d.Launches) != 1 || d.Launches[0].JobID != 1 || d.Launches[0].Pool != "gpu" {
		t.Fatalf("want the oldest job launched first, got %+v", d.Launches)
	}
}

func TestDecidePerOrg(t *testing.T) {
	// A runner registered in one organization cannot take another's job.
	cfg := testConfig()
	jobs := []fleet.Job{{ID: 1, Pool: "linux", Org: "other", QueuedAt: t0}}
	d := Decide(cfg, Snapshot{Now: t0, Queued: jobs, Runners: runners("linux", fleet.RunnerStarted, 1)})
	if len(d.Launches) != 1 || d.Launches[0].Org != "other" {
		t.Fatalf("launches = %+v, want one for org other", d.Launches)
	}
	if len(d.Teardowns) != 1 {
		t.Fatalf("acme's idle runner is surplus; teardowns = %+v", d.Teardowns)
	}
}

func TestDecideWarmPool(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].MinIdle = 2
	acme := []fleet.Org{{InstallationID: 1, Login: "acme"}}
	tests := []struct {
		name      string
		snap      Snapshot
		launches  int
		teardowns map[fleet.DeleteMode]int
	}{
		{"no org known yet: nothing to warm", Snapshot{Now: t0}, 0, nil},
		{"empty pool fills to min_idle", Snapshot{Now: t0, Orgs: acme}, 2, nil},
		{"queued jobs come on top of min_idle", Snapshot{Now: t0, Orgs: acme, Queued: queuedJobs("linux", 1)}, 3, nil},
		{"warm runners at rest: nothing", Snapshot{Now: t0, Orgs: acme, Runners: runners("linux", fleet.RunnerStarted, 2)}, 0, nil},
		{"one taken by a job: refill", Snapshot{Now: t0, Orgs: acme,
			Runners: cat(runners("linux", fleet.RunnerStarted, 1), runners("linux", fleet.RunnerBusy, 1))}, 1, nil},
		{"limits cap the warm pool", Snapshot{Now: t0, Orgs: acme, Runners: runners("linux", fleet.RunnerBusy, 3)}, 1, nil},
		{"above min_idle: surplus", Snapshot{Now: t0, Orgs: acme, Runners: runners("linux", fleet.RunnerStarted, 3)},
			0, map[fleet.DeleteMode]int{fleet.ModeSurplus: 1}},
		{"idle past max_idle_age: recycled", Snapshot{Now: t0.Add(DefaultMaxIdleAge), Orgs: acme,
			Runners: onlineRunners("linux", 2)}, 0, map[fleet.DeleteMode]int{fleet.ModeSurplus: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(cfg, tt.snap)
			if len(d.Launches) != tt.launches {
				t.Errorf("launches = %d, want %d", len(d.Launches), tt.launches)
			}
			got := map[fleet.DeleteMode]int{}
			for _, td := range d.Teardowns {
				got[td.Mode]++
			}
			if fmt.Sprint(got) != fmt.Sprint(orEmpty(tt.teardowns)) {
				t.Errorf("teardowns = %v, want %v", got, tt.teardowns)
			}
		})
	}
}

func onlineRunners(pool string, n int) []fleet.Runner {
	rs := runners(pool, fleet.RunnerStarted, n)
	for i := range rs {
		rs[i].OnlineAt = t0
	}
	return rs
}

func TestDecideDrainedPool(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].MinIdle = 1
	d := Decide(cfg, Snapshot{Now: t0, Queued: queuedJobs("linux", 2), Orgs: []fleet.Org{{InstallationID: 1, Login: "acme"}},
		Drained: map[string]bool{"linux": true}, Runners: runners("linux", fleet.RunnerBusy, 1)})
	if len(d.Launches) != 0 || len(d.Teardowns) != 0 {
		t.Fatalf("a drained pool launched or tore down: %+v", d)
	}
}
