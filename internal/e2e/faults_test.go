package e2e

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// A runner that never connects is replaced after registration_timeout, and
// the job still runs.
func TestRunnerThatNeverRegistersIsReplaced(t *testing.T) {
	e := newEnv(t, options{limits: "  registration_timeout: 4s"})
	e.fake.HangRunners(1)
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 200 * time.Millisecond})
	e.waitCompleted(id)
	e.waitNoInstances()
	if n := e.jitCalls(); n != 2 {
		t.Fatalf("launches = %d, want 2 (the hung runner and its replacement)", n)
	}
	e.waitLog("runner not online within registration_timeout")
	e.eventually("no runner records left", 30*time.Second, func() bool { return len(e.fake.Runners()) == 0 })
}

// An instance without our keys is never touched; one with our keys that
// the state does not know is deleted by the reconciler.
func TestReconcilerTouchesOnlyOurs(t *testing.T) {
	e := newEnv(t, options{top: "reconcile_interval: 1s"})
	raw := lxdtest.Raw(t)
	alias, _ := lxdtest.Image(t, e.lxd, devimage.Options{})
	create := func(name string, cfg map[string]string) {
		t.Helper()
		op, err := raw.CreateInstance(api.InstancesPost{Name: name, Source: api.InstanceSource{Type: "image", Alias: alias},
			InstancePut: api.InstancePut{Config: cfg, Profiles: []string{"default"}}})
		if err == nil {
			err = op.Wait()
		}
		if err == nil {
			op, err = raw.UpdateInstanceState(name, api.InstanceStatePut{Action: "start", Timeout: -1}, "")
			if err == nil {
				err = op.Wait()
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		lxdtest.Cleanup(t, e.lxd, name)
	}
	byHand := e.prefix + "linux-byhand" // even with our prefix: no keys, not ours
	ghost := e.prefix + "linux-ghost"
	other := lxdtest.Name(t) // another deployment's
	create(byHand, nil)
	// Instances with our labels, as a service makes them.
	labelled := func(name, owner string) error {
		lxdtest.Cleanup(t, e.lxd, name)
		return e.lxd.Create(e.ctx, fleet.InstanceSpec{Name: name, Image: alias, Profiles: []string{"default"},
			Labels: fleet.InstanceLabels{Owner: owner, Pool: "linux"}})
	}
	// The reconciler (every second) may delete the ghost while its start
	// is still under way, and the start then fails: that is the point.
	_ = labelled(ghost, e.prefix)
	if err := labelled(other, "someone-else-"); err != nil {
		t.Fatal(err)
	}

	e.eventually("the unknown instance of ours deleted", 30*time.Second, func() bool {
		_, err := e.lxd.Get(e.ctx, ghost)
		return err != nil
	})
	time.Sleep(2 * time.Second) // two more reconcile rounds
	for _, name := range []string{byHand, other} {
		if _, err := e.lxd.Get(e.ctx, name); err != nil {
			t.Fatalf("%s was touched: %v", name, err)
		}
	}
}

// GitHub answers 500 and then 429 with Retry-After for a while: every job
// still completes, without a storm of requests.
func TestGitHubErrorsAndRateLimits(t *testing.T) {
	e := newEnv(t, options{})
	var phase atomic.Int32 // 0: 500s, 1: 429s, 2: healthy
	var faulted atomic.Int32
	e.fake.SetFault(func(r *http.Request) (int, http.Header, bool) {
		if strings.Contains(r.URL.Path, "/access_tokens") || strings.Contains(r.URL.Path, "/_fake/") {
			return 0, nil, false
		}
		switch phase.Load() {
		case 0:
			faulted.Add(1)
			return http.StatusInternalServerError, nil, true
		case 1:
			faulted.Add(1)
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"2"}}, true
		}
		return 0, nil, false
	})
	var ids []int64
	for i := 0; i < 5; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 100 * time.Millisecond}))
	}
	time.Sleep(4 * time.Second)
	phase.Store(1)
	time.Sleep(4 * time.Second)
	phase.Store(2)
	e.waitCompleted(ids...)
	e.waitNoInstances()
	// 8 s of faults with backoff: a handful of tries, not hundreds.
	if n := faulted.Load(); n > 40 {
		t.Fatalf("%d requests during the fault window: a storm", n)
	}
	t.Logf("requests answered with a fault: %d", faulted.Load())
}

// The stand-in drops the queued deliveries of 3 jobs and lists them as
// failed: the service redelivers them, and they run.
func TestDroppedWebhooksAreRedelivered(t *testing.T) {
	e := newEnv(t, options{top: "redeliver_interval: 1s"})
	var dropped atomic.Int32
	e.fake.DropWebhooks(func(event, action string, jobID int64) bool {
		return action == "queued" && dropped.Add(1) <= 3
	})
	var ids []int64
	for i := 0; i < 5; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 100 * time.Millisecond}))
	}
	e.waitCompleted(ids...)
	e.waitNoInstances()
	if n := e.jitCalls(); n != 5 {
		t.Fatalf("launches = %d, want 5", n)
	}
	var redelivered int
	for _, d := range e.fake.Deliveries() {
		if d.Redelivery {
			redelivered++
		}
	}
	if redelivered != 3 {
		t.Fatalf("redeliveries = %d, want 3", redelivered)
	}
}

// 40 jobs on 4 slots; the service is killed with SIGKILL twice at random
// moments and restarted on the same state. Every job completes, each job
// gets one runner, and nothing is left behind.
func TestKillNineTwice(t *testing.T) {
	e := newEnv(t, options{maxInstances: 4, top: "redeliver_interval: 1s\nreconcile_interval: 2s",
		limits: "  registration_timeout: 20s"})
	var ids []int64
	for i := 0; i < 40; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app",
			Duration: time.Duration(200+rand.IntN(600)) * time.Millisecond}))
	}
	for kill := 0; kill < 2; kill++ {
		time.Sleep(time.Duration(2000+rand.IntN(4000)) * time.Millisecond)
		e.stop(syscall.SIGKILL)
		t.Logf("killed the service (%d jobs completed so far)", completed(e))
		time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
		e.start()
	}
	e.waitCompleted(ids...)
	e.waitNoInstances()
	e.eventually("no runner records left", time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
	// One runner per job: count the runners that connected to the stand-in.
	// (A JIT config whose instance was never created, because the kill came
	// between the two, is removed and does not count.)
	if n := e.fake.Requests()["POST /_fake/runner/connect"]; n != 40 {
		t.Fatalf("runners that connected = %d, want 40; JIT configs = %d", n, e.jitCalls())
	}
	e.checkNoSecrets()
}

func completed(e *env) int {
	n := 0
	for _, j := range e.fake.Jobs() {
		if j.Status == ghfake.StatusCompleted {
			n++
		}
	}
	return n
}

// A warm pool keeps two idle runners; a job is taken by one of them with
// no launch in between, and the pool refills.
func TestWarmPool(t *testing.T) {
	e := newEnv(t, options{extraPool: "    min_idle: 2"})
	// The warm pool serves organizations the service has seen jobs from.
	first := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 100 * time.Millisecond})
	e.waitCompleted(first)
	idle := e.idleRunners
	e.eventually("two idle runners at rest", time.Minute, func() bool { return idle() == 2 && len(e.instances()) == 2 })
	before := e.jitCalls()
	// Idle runners take no job: only the online check sees them come online.
	e.eventually("every runner that connected seen online", 30*time.Second, func() bool {
		connected := e.fake.Requests()["POST /_fake/runner/connect"]
		return sum(e.scrape(), "lxd_gha_autoscaler_runner_ready_seconds_count") == float64(connected)
	})
	time.Sleep(2 * time.Second)
	if e.jitCalls() != before || len(e.instances()) != 2 {
		t.Fatalf("the pool at rest still launches: %d -> %d JIT configs", before, e.jitCalls())
	}

	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 3 * time.Second})
	j, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status != ghfake.StatusQueued })
	if err != nil {
		t.Fatal(err)
	}
	if wait := j.StartedAt.Sub(j.CreatedAt); wait > time.Second {
		t.Logf("note: the job waited %v for a warm runner", wait)
	}
	// It ran on a runner that existed before it was queued.
	if j.RunnerName == "" || e.fake.Requests()[jitRoute] > before+1 {
		t.Fatalf("job ran on %q after %d new launches", j.RunnerName, e.jitCalls()-before)
	}
	e.waitCompleted(id)
	e.eventually("the pool refilled", time.Minute, func() bool { return idle() == 2 && len(e.instances()) == 2 })
	if n := e.jitCalls(); n != before+1 {
		t.Fatalf("JIT configs = %d, want %d (one refill)", n, before+1)
	}
}

// An idle runner that comes online and then goes silent (its process hung,
// its instance still runs) is replaced at reconcile, and the next job runs
// on a working runner.
func TestRunnerThatGoesSilentIsReplaced(t *testing.T) {
	// The stand-in lists a silent runner online for 12 s: long enough for
	// the service's online check (every 5 s) to see it come online.
	e := newEnv(t, options{extraPool: "    min_idle: 1", top: "reconcile_interval: 1s", runnerOfflineAfter: 12 * time.Second})
	job := func() int64 {
		return e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 100 * time.Millisecond})
	}
	idle := e.idleRunners
	e.waitCompleted(job()) // the warm pool serves organizations it has seen
	e.eventually("one idle runner at rest", time.Minute, func() bool { return idle() == 1 && len(e.instances()) == 1 })
	before := e.jitCalls()

	e.fake.StallRunners(1) // the runner that refills the pool goes silent
	e.waitCompleted(job())
	e.eventually("the silent runner retired", time.Minute, func() bool {
		return strings.Contains(e.logText(), "idle runner went offline at GitHub")
	})
	e.eventually("a working runner in its place", time.Minute, func() bool {
		return idle() == 1 && len(e.instances()) == 1 && len(e.fake.Runners()) == 1
	})
	if n := e.jitCalls(); n != before+2 {
		t.Fatalf("launches since the pool was at rest = %d, want 2 (the silent refill and its replacement)", n-before)
	}
	last := job()
	e.waitCompleted(last)
	if j, _ := e.fake.Job(last); j.Conclusion != ghfake.ConclusionSuccess {
		t.Fatalf("job after the replacement: %s", j.Conclusion)
	}
}

// A job that runs past max_job_duration has its instance deleted; GitHub
// then fails the job, and nothing is left.
func TestMaxJobDuration(t *testing.T) {
	e := newEnv(t, options{limits: "  max_job_duration: 3s"})
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 10 * time.Minute})
	if _, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusInProgress }); err != nil {
		t.Fatal(err)
	}
	e.waitNoInstances()
	e.waitLog("job ran past max_job_duration")
	j := e.fake.Job
	e.waitCompleted(id)
	if v, _ := j(id); v.Conclusion != ghfake.ConclusionFailure {
		t.Fatalf("conclusion = %q, want failure", v.Conclusion)
	}
	e.eventually("no runner records left", time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
}
