package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// idleRunnersOf counts the runners of an organization that the stand-in
// lists online and not busy.
func (e *env) idleRunnersOf(org string) int {
	n := 0
	for _, r := range e.fake.Runners() {
		if r.Org == org && r.Status == "online" && !r.Busy {
			n++
		}
	}
	return n
}

// within polls cond every 10 ms and returns how long it took to hold, or
// fails the test after limit.
func (e *env) within(what string, limit time.Duration, cond func() bool) time.Duration {
	e.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			e.t.Fatalf("timed out after %v waiting for: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestWarmPoolFromInstallations: on an empty state, with the App installed
// on one organization, a pool with min_idle 2 has two idle runners online
// within about one launch time of the service starting, without any job;
// a job takes one and the pool refills while it runs; an installation
// added while it runs gets its own two, and loses them when removed.
func TestWarmPoolFromInstallations(t *testing.T) {
	started := time.Now()
	e := newEnv(t, options{maxInstances: 6, pool: "    min_idle: 2"})
	healthy := time.Since(started)
	warm := e.within("two idle runners for acme", time.Minute, func() bool { return e.idleRunnersOf("acme") >= 2 })
	t.Logf("two idle runners online %v after the service was healthy (%v after it was started)", warm.Round(time.Millisecond),
		(healthy + warm).Round(time.Millisecond))
	if jobs := e.fake.Jobs(); len(jobs) != 0 {
		t.Fatalf("jobs = %d: the warm pool must fill without any", len(jobs))
	}
	if n := e.jitCalls(); n != 2 {
		t.Fatalf("JIT configs = %d, want 2", n)
	}
	warmNames := map[string]bool{}
	for _, r := range e.fake.Runners() {
		warmNames[r.Name] = true
	}

	// A job takes a warm runner; its replacement is launched (its JIT
	// config is asked for) on the job's in_progress webhook, not on its
	// completion, and is online soon after. The time it took is logged,
	// not asserted: the machines are shared.
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 5 * time.Second})
	j, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status != ghfake.StatusQueued })
	if err != nil {
		t.Fatal(err)
	}
	if !warmNames[j.RunnerName] {
		t.Fatalf("job ran on %s, not on a warm runner", j.RunnerName)
	}
	refill := e.within("the warm pool's refill launched", 10*time.Second, func() bool { return e.jitCalls() >= 3 })
	refill += time.Since(j.StartedAt) - refill // from the moment the job was taken
	t.Logf("job taken %v after it was queued; refill launched %v after", j.StartedAt.Sub(j.CreatedAt).Round(time.Millisecond),
		refill.Round(time.Millisecond))
	if j, _ := e.fake.Job(id); j.Status == ghfake.StatusCompleted {
		t.Errorf("the warm pool refilled only after the job completed (%v after it was taken)", refill)
	}
	e.within("two idle runners for acme again", time.Minute, func() bool { return e.idleRunnersOf("acme") >= 2 })

	// An installation added while the service runs: its webhook brings its
	// warm runners, registered in its organization.
	beta, err := e.fake.AddInstallation("beta")
	if err != nil {
		t.Fatal(err)
	}
	took := e.within("two idle runners for beta", time.Minute, func() bool { return e.idleRunnersOf("beta") >= 2 })
	t.Logf("two idle runners for the new installation online %v after it was added", took.Round(time.Millisecond))
	for _, in := range e.instances() {
		if in.Labels.Org == "beta" && in.Labels.InstallationID != beta {
			t.Fatalf("instance %s of beta has installation %d, want %d", in.Name, in.Labels.InstallationID, beta)
		}
	}
	// Removed: its idle runners go, GitHub's records first.
	if err := e.fake.RemoveInstallation(beta); err != nil {
		t.Fatal(err)
	}
	e.within("beta's runners and instances gone", time.Minute, func() bool {
		for _, in := range e.instances() {
			if in.Labels.Org == "beta" {
				return false
			}
		}
		return e.idleRunnersOf("beta") == 0
	})
	e.waitCompleted(id)
	e.waitLog(`"message":"installation recorded"`)
	e.checkNoSecrets()
}

// TestPreparedInstances: a pool with prepared: 2 keeps two instances made
// and stopped, holding no JIT config; jobs take them (JIT config, set it,
// start) and the pool is prepared again; when the image's alias moves to
// a new image, the prepared instances of the old one are replaced, none
// of them ever given a runner.
func TestPreparedInstances(t *testing.T) {
	c := lxdtest.Connect(t)
	runner := devimage.Options{Binary: runnerPath, Init: []string{devimage.DefaultBinaryPath, "fake-runner"}}
	alias, fp1 := lxdtest.Image(t, c, runner)
	e := newEnv(t, options{maxInstances: 2, image: alias, pool: "    prepared: 2"})
	raw := lxdtest.Raw(t)
	prepared := func(fp string) map[string]bool {
		out := map[string]bool{}
		for _, in := range e.instances() {
			if in.State == fleet.InstanceStopped && in.Labels.RunnerID == 0 && (fp == "" || in.Image == fp) {
				out[in.Name] = true
			}
		}
		return out
	}
	noJIT := func() {
		t.Helper()
		for name := range prepared("") {
			inst, _, err := raw.GetInstance(name)
			if err != nil {
				continue // taken or replaced meanwhile
			}
			if v, ok := inst.Config[fleet.KeyJITConfig]; ok && inst.StatusCode.String() == "Stopped" {
				t.Fatalf("prepared instance %s holds %s (%d bytes)", name, fleet.KeyJITConfig, len(v))
			}
		}
	}
	// LXD lists an instance, stopped, while it is being created: the
	// service's log says when a prepared instance is ready.
	ready := func(n int) func() bool {
		return func() bool { return strings.Count(e.logText(), `"message":"prepared instance ready"`) >= n }
	}
	e.within("two prepared instances", time.Minute, ready(2))
	first := prepared(fp1)
	noJIT()
	if n := e.jitCalls(); n != 0 {
		t.Fatalf("JIT configs before any job = %d", n)
	}

	var ids []int64
	for range 2 {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 500 * time.Millisecond}))
	}
	e.waitCompleted(ids...)
	for _, id := range ids {
		j, _ := e.fake.Job(id)
		if !first[j.RunnerName] {
			t.Fatalf("job %d ran on %s, not on a prepared instance (%v)", id, j.RunnerName, first)
		}
		t.Logf("job %d taken %v after it was queued, on prepared instance %s", id, j.StartedAt.Sub(j.CreatedAt).Round(time.Millisecond), j.RunnerName)
	}
	e.within("the pool prepared again", time.Minute, func() bool {
		p := prepared(fp1)
		if !ready(4)() {
			return false
		}
		for n := range first {
			if p[n] {
				return false
			}
		}
		return len(p) == 2
	})
	noJIT()

	// The alias moves to a new image (as an image build does).
	_, fp2 := lxdtest.Image(t, c, runner)
	if err := c.SetAlias(context.Background(), alias, fp2); err != nil {
		t.Fatal(err)
	}
	e.within("the prepared instances replaced by ones of the new image", time.Minute, func() bool {
		return ready(6)() && len(prepared(fp2)) == 2 && len(prepared(fp1)) == 0
	})
	noJIT()
	if n := e.jitCalls(); n != 2 {
		t.Fatalf("JIT configs = %d, want 2: one per job, none for a prepared instance", n)
	}
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 200 * time.Millisecond})
	e.waitCompleted(id)
	if j, _ := e.fake.Job(id); !strings.HasPrefix(j.RunnerName, e.prefix) {
		t.Fatalf("job ran on %q", j.RunnerName)
	}
	e.waitLog(`"message":"prepared instance deleted"`)
	e.checkNoSecrets()
}
