package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// These tests run the scheduler against a real SQLite store and the
// shared fakes: an in-memory LXD and GitHub and a clock the test drives.
// The end-to-end tests run the same against the real LXD daemon and the
// GitHub stand-in over HTTP.

type env struct {
	t     *testing.T
	st    *store.Store
	lxd   *fleettest.Instances
	gh    *fleettest.GitHub
	clock *fleettest.Clock
	m     *fleettest.Metrics
	s     *Scheduler
	logs  *fleettest.LogBuffer
	seq   int
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{
		t: t, st: st,
		lxd:   fleettest.NewInstances(),
		gh:    fleettest.NewGitHub(),
		clock: fleettest.NewClock(t0),
		m:     fleettest.NewMetrics(),
		logs:  &fleettest.LogBuffer{},
	}
	e.s = e.newScheduler(cfg)
	return e
}

// newScheduler is a scheduler on e's state and fakes, as after a restart.
func (e *env) newScheduler(cfg Config) *Scheduler {
	e.t.Helper()
	s, err := New(cfg, Deps{State: e.st, Instances: e.lxd, GitHub: e.gh, Metrics: e.m, Clock: e.clock, Log: zerolog.New(e.logs)})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// deliver records a delivery as the webhook handler would.
func (e *env) deliver(action fleet.Action, jobID int64, runner string, labels ...string) {
	e.t.Helper()
	if labels == nil {
		labels = []string{"self-hosted", "linux", "x64"}
	}
	e.seq++
	_, err := e.st.Record(context.Background(), fleet.Delivery{
		DeliveryID: fmt.Sprintf("d-%d", e.seq), Action: action, JobID: jobID, InstallationID: 1, Org: "acme",
		Repo: "acme/app", Labels: labels, RunnerName: runner, ReceivedAt: e.clock.Now(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// askLXD lets a launch that waits for LXD ask n more times: each time it
// sleeps on the clock, the clock moves past its backoff.
func (e *env) askLXD(n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range n {
		if err := e.clock.WaitTimers(ctx, 1); err != nil {
			e.t.Fatal("the launch does not wait for LXD:", err)
		}
		e.clock.Advance(DefaultTimeouts.LXDRetryCap)
	}
}

// waitUntil polls cond until it holds. The code under test runs on the
// fake clock; this only waits for its goroutines to get there.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// settle runs steps until no worker is left in flight.
func (e *env) settle() {
	e.t.Helper()
	for i := 0; i < 5; i++ {
		if err := e.s.Step(context.Background()); err != nil {
			e.t.Fatal(err)
		}
		e.s.wg.Wait()
	}
}

func (e *env) runnersIn(state fleet.RunnerState) []fleet.Runner {
	e.t.Helper()
	rs := fleettest.Read(e.t, e.st, func(tx fleet.Tx) ([]fleet.Runner, error) { return tx.Runners(0) })
	var out []fleet.Runner
	for _, r := range rs {
		if state == "" || r.State == state {
			out = append(out, r)
		}
	}
	return out
}

// startRunners queues jobs 1..n and returns the n runners started for them.
func (e *env) startRunners(n int) []fleet.Runner {
	e.t.Helper()
	for i := 1; i <= n; i++ {
		e.deliver(fleet.ActionQueued, int64(i), "")
	}
	e.settle()
	rs := e.runnersIn(fleet.RunnerStarted)
	if len(rs) != n {
		e.t.Fatalf("started runners = %d, want %d", len(rs), n)
	}
	return rs
}

func (e *env) job(id int64) fleet.Job {
	e.t.Helper()
	return fleettest.Read(e.t, e.st, func(tx fleet.Tx) (fleet.Job, error) { return tx.Job(id) })
}

func (e *env) runner(name string) fleet.Runner {
	e.t.Helper()
	return fleettest.Read(e.t, e.st, func(tx fleet.Tx) (fleet.Runner, error) { return tx.Runner(name) })
}

func (e *env) events(jobID int64) []fleet.Event {
	e.t.Helper()
	return fleettest.Read(e.t, e.st, func(tx fleet.Tx) ([]fleet.Event, error) { return tx.Events(jobID) })
}

// timeline returns the kinds of a job's timeline steps, space-separated,
// and fails if the steps are out of time order.
func (e *env) timeline(jobID int64) string {
	e.t.Helper()
	evs := e.events(jobID)
	var kinds []string
	for i, ev := range evs {
		kinds = append(kinds, ev.Kind)
		if i > 0 && ev.At.Before(evs[i-1].At) {
			e.t.Fatalf("job %d: steps out of time order: %+v", jobID, evs)
		}
	}
	return strings.Join(kinds, " ")
}

func (e *env) noSecretInLogs() {
	e.t.Helper()
	if strings.Contains(e.logs.String(), "JITSECRET") {
		e.t.Fatal("a JIT config reached the logs")
	}
}

func TestManyJobsFewSlots(t *testing.T) {
	cfg := testConfig()
	e := newEnv(t, cfg)
	const jobs = 30
	for i := 1; i <= jobs; i++ {
		e.deliver(fleet.ActionQueued, int64(i), "")
	}
	nextJob := int64(1)
	for round := 0; round < 100 && nextJob <= jobs+1; round++ {
		e.settle()
		if n := e.lxd.Count(); n > cfg.MaxInstances {
			t.Fatalf("%d instances at once, limit %d", n, cfg.MaxInstances)
		}
		// GitHub gives the oldest queued jobs to the started runners, in
		// whatever order it likes; then the jobs complete.
		started := e.runnersIn(fleet.RunnerStarted)
		var took []string
		for _, r := range started {
			if nextJob > jobs {
				break
			}
			e.deliver(fleet.ActionInProgress, nextJob, r.Name)
			took = append(took, r.Name)
			nextJob++
		}
		e.settle()
		for i, name := range took {
			e.deliver(fleet.ActionCompleted, nextJob-int64(len(took))+int64(i), name)
		}
		if len(took) == 0 && nextJob > jobs {
			break
		}
	}
	e.settle()
	if e.lxd.Creates() != jobs {
		t.Fatalf("launches = %d, want %d", e.lxd.Creates(), jobs)
	}
	if e.lxd.Count() != 0 {
		t.Fatalf("%d instances left", e.lxd.Count())
	}
	if e.lxd.Peak() > cfg.MaxInstances {
		t.Fatalf("peak %d instances, limit %d", e.lxd.Peak(), cfg.MaxInstances)
	}
	for i := int64(1); i <= jobs; i++ {
		if j := e.job(i); j.State != fleet.JobCompleted {
			t.Fatalf("job %d is %s", i, j.State)
		}
	}
	e.noSecretInLogs()
}

func TestDuplicateQueuedLaunchesOnce(t *testing.T) {
	e := newEnv(t, testConfig())
	for i := 0; i < 5; i++ {
		e.deliver(fleet.ActionQueued, 7, "") // five deliveries of one job
		e.settle()
	}
	if e.lxd.Creates() != 1 {
		t.Fatalf("launches = %d, want 1", e.lxd.Creates())
	}
	// After the job completes, a late queued delivery must not relaunch.
	r := e.runnersIn(fleet.RunnerStarted)[0]
	e.deliver(fleet.ActionInProgress, 7, r.Name)
	e.deliver(fleet.ActionCompleted, 7, r.Name)
	e.settle()
	e.deliver(fleet.ActionQueued, 7, "")
	e.settle()
	if e.lxd.Creates() != 1 || e.lxd.Count() != 0 {
		t.Fatalf("launches = %d, instances = %d; want 1, 0", e.lxd.Creates(), e.lxd.Count())
	}
}

func TestRunnerTakesAnotherJob(t *testing.T) {
	e := newEnv(t, testConfig())
	rs := e.startRunners(2)
	// The runner launched for job 1 runs job 2, and the other way round.
	byJob := map[int64]string{rs[0].JobID: rs[0].Name, rs[1].JobID: rs[1].Name}
	e.deliver(fleet.ActionInProgress, 2, byJob[1])
	e.settle()
	if e.lxd.Creates() != 2 {
		t.Fatalf("launches = %d, want 2: job 1 is still covered by the other runner", e.lxd.Creates())
	}
	e.deliver(fleet.ActionInProgress, 1, byJob[2])
	e.deliver(fleet.ActionCompleted, 2, byJob[1])
	e.deliver(fleet.ActionCompleted, 1, byJob[2])
	e.settle()
	if e.lxd.Creates() != 2 || e.lxd.Count() != 0 {
		t.Fatalf("launches = %d, instances = %d", e.lxd.Creates(), e.lxd.Count())
	}
}

func TestJobTakenByForeignRunnerLeavesSurplus(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	e.deliver(fleet.ActionInProgress, 1, "someone-elses-runner")
	e.settle()
	if e.lxd.Count() != 0 || e.gh.Removes() != 1 {
		t.Fatalf("surplus runner: instances = %d, records removed = %d; want 0, 1", e.lxd.Count(), e.gh.Removes())
	}
}

func TestCancelledQueuedJob(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.deliver(fleet.ActionQueued, 2, "")
	e.settle()
	e.deliver(fleet.ActionCompleted, 1, "") // cancelled while queued
	e.settle()
	if e.lxd.Count() != 1 {
		t.Fatalf("instances = %d, want 1 (one runner for job 2)", e.lxd.Count())
	}
	if e.gh.Removes() != 1 {
		t.Fatalf("GitHub records removed = %d, want 1", e.gh.Removes())
	}
	if j := e.job(1); j.State != fleet.JobCompleted {
		t.Fatalf("job 1 is %s", j.State)
	}
}

func TestSurplusRunnerThatTookAJobIsKept(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(fleet.RunnerStarted)[0]
	// GitHub gave the runner a job; its in_progress event is not here yet,
	// and the queued job is cancelled meanwhile, so the runner looks surplus.
	e.gh.Set(r.Name, func(m *fleettest.GitHubRunner) { m.Online, m.Busy = true, true })
	e.deliver(fleet.ActionCompleted, 1, "")
	e.settle()
	if e.lxd.Count() != 1 {
		t.Fatal("a runner running a job was deleted")
	}
	if got := e.runnersIn(fleet.RunnerBusy); len(got) != 1 {
		t.Fatalf("runner should be busy, runners: %+v", e.runnersIn(""))
	}
	// Its in_progress then arrives, then completed: deleted as usual.
	e.deliver(fleet.ActionInProgress, 99, r.Name)
	e.deliver(fleet.ActionCompleted, 99, r.Name)
	e.settle()
	if e.lxd.Count() != 0 {
		t.Fatal("instance left after its job completed")
	}
}

func TestInProgressDuringSurplusCheckKeepsRunner(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(fleet.RunnerStarted)[0]
	// Put it in the middle of a surplus teardown, then the in_progress event
	// arrives before the worker deletes the instance.
	err := e.st.Update(context.Background(), func(tx fleet.Tx) error {
		x, _ := tx.Runner(r.Name)
		x.State, x.DeleteMode = fleet.RunnerDeleting, fleet.ModeSurplus
		return tx.PutRunner(x)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.deliver(fleet.ActionInProgress, 1, r.Name)
	e.settle()
	if e.lxd.Count() != 1 || len(e.runnersIn(fleet.RunnerBusy)) != 1 {
		t.Fatalf("runner claimed by in_progress was torn down: %+v", e.runnersIn(""))
	}
}

func TestRegistrationTimeout(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.deliver(fleet.ActionQueued, 2, "")
	e.settle()
	rs := e.runnersIn(fleet.RunnerStarted)
	e.gh.Set(rs[0].Name, func(m *fleettest.GitHubRunner) { m.Online = true }) // one came online, one never did
	e.clock.Advance(DefaultRegistrationTimeout)
	e.settle()
	if e.lxd.Creates() != 3 {
		t.Fatalf("launches = %d, want 3 (one replacement)", e.lxd.Creates())
	}
	deleted := e.runnersIn(fleet.RunnerDeleted)
	if len(deleted) != 1 || deleted[0].Name != rs[1].Name || deleted[0].Reason == "" {
		t.Fatalf("deleted = %+v, want %s with a reason", deleted, rs[1].Name)
	}
	// The online one is not checked again.
	e.clock.Advance(DefaultRegistrationTimeout)
	e.settle()
	var kept bool
	for _, r := range e.runnersIn(fleet.RunnerStarted) {
		kept = kept || r.Name == rs[0].Name
	}
	if !kept {
		t.Fatal("the online runner was deleted")
	}
	e.noSecretInLogs()
}

func TestMaxJobDuration(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(fleet.RunnerStarted)[0]
	e.deliver(fleet.ActionInProgress, 1, r.Name)
	e.settle()
	e.clock.Advance(DefaultMaxJobDuration - time.Second)
	e.settle()
	if e.lxd.Count() != 1 {
		t.Fatal("deleted before max_job_duration")
	}
	e.clock.Advance(time.Second)
	e.settle()
	if e.lxd.Count() != 0 {
		t.Fatal("not deleted after max_job_duration")
	}
	if d := e.runnersIn(fleet.RunnerDeleted); len(d) != 1 || !strings.Contains(d[0].Reason, "max_job_duration") {
		t.Fatalf("deleted = %+v", d)
	}
}

func TestLaunchFailuresRetryAndLoseNothing(t *testing.T) {
	e := newEnv(t, testConfig())
	e.lxd.FailNext(2)
	e.gh.FailJIT(1)
	e.deliver(fleet.ActionQueued, 1, "")
	for i := 0; i < 10 && e.lxd.Creates() == 0; i++ {
		e.settle()
		e.clock.Advance(DefaultMaxBackoff)
	}
	if e.lxd.Creates() != 1 {
		t.Fatalf("launches = %d, want 1 after retries", e.lxd.Creates())
	}
	// The JIT failure made nothing; the two create failures were torn down
	// the careful way (GitHub record first).
	if failed, torn := e.runnersIn(fleet.RunnerFailed), e.runnersIn(fleet.RunnerDeleted); len(failed) != 1 || len(torn) != 2 {
		t.Fatalf("failed = %d, torn down = %d; want 1, 2", len(failed), len(torn))
	}
	// The GitHub records of the two runners whose instance failed are gone.
	if n := len(e.gh.Names()); n != 1 {
		t.Fatalf("GitHub runner records = %d, want 1", n)
	}
	if j := e.job(1); j.State != fleet.JobQueued {
		t.Fatalf("job is %s, want queued until a runner takes it", j.State)
	}
	e.noSecretInLogs()
}

func TestLaunchCarriesLabelsAndSecret(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 5, "", "self-hosted", "gpu")
	e.settle()
	specs := e.lxd.Specs()
	if len(specs) != 1 {
		t.Fatalf("specs = %d", len(specs))
	}
	for name, spec := range specs {
		l := spec.Labels
		if l.Owner != "gha-" || l.Pool != "gpu" || l.JobID != 5 || !l.CreatedAt.Equal(t0) || l.RunnerID == 0 ||
			l.Org != "acme" || l.InstallationID != 1 {
			t.Fatalf("labels missing: %+v", l)
		}
		if spec.JITConfig != fleettest.JITSecret(name) {
			t.Fatal("JIT config not handed to LXD")
		}
		if _, ok := spec.Config[fleet.KeyJITConfig]; ok {
			t.Fatal("JIT config must travel as a Secret, not in the plain config map")
		}
		if got := fmt.Sprintf("%v %+v %s", spec, spec, spec.JITConfig); strings.Contains(got, "JITSECRET") {
			t.Fatalf("formatting a spec shows the secret: %s", got)
		}
	}
}

// Each pool's runners join its own runner group: GitHub gives a job only
// to runners of groups that admit its repository.
func TestLaunchJoinsThePoolsRunnerGroup(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[1].RunnerGroup = "gpu-runners"
	e := newEnv(t, cfg)
	e.deliver(fleet.ActionQueued, 1, "", "self-hosted", "gpu")
	e.deliver(fleet.ActionQueued, 2, "", "self-hosted", "linux")
	e.settle()
	groups := map[string]string{}
	for _, r := range e.runnersIn("") {
		groups[r.Pool] = e.gh.Records()[r.Name].Group
	}
	if groups["gpu"] != "gpu-runners" || groups["linux"] != DefaultRunnerGroup {
		t.Fatalf("runner groups by pool: %v", groups)
	}
}

func TestReconcile(t *testing.T) {
	e := newEnv(t, testConfig())
	ours := func(name string, state fleet.InstanceState, l fleet.InstanceLabels) {
		l.Owner = cmp.Or(l.Owner, "gha-")
		e.lxd.Put(fleet.Instance{Name: name, Managed: true, Labels: l, State: state})
	}
	// An instance of ours that the state does not know.
	ours("gha-linux-ghost", fleet.InstanceRunning, fleet.InstanceLabels{})
	// Unknown to the state but its runner is running a job: left alone.
	e.gh.Add(77, fleettest.GitHubRunner{Name: "gha-linux-working", Online: true, Busy: true})
	ours("gha-linux-working", fleet.InstanceRunning, fleet.InstanceLabels{RunnerID: 77, Org: "acme", InstallationID: 1})
	// One of another deployment sharing the LXD project: not ours to touch.
	ours("other-linux-1", fleet.InstanceRunning, fleet.InstanceLabels{Owner: "other-"})
	// Not made by a service like this one at all.
	e.lxd.Put(fleet.Instance{Name: "gha-linux-pet", State: fleet.InstanceRunning})
	// A launch interrupted by a crash: a row in launching with no worker.
	err := e.st.Update(context.Background(), func(tx fleet.Tx) error {
		return tx.PutRunner(fleet.Runner{Name: "gha-linux-cut", Pool: "linux", Org: "acme", State: fleet.RunnerLaunching, CreatedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	ours("gha-linux-cut", fleet.InstanceStopped, fleet.InstanceLabels{})
	// One whose instance was started before the crash: adopted, not killed.
	err = e.st.Update(context.Background(), func(tx fleet.Tx) error {
		return tx.PutRunner(fleet.Runner{Name: "gha-linux-adopt", Pool: "linux", Org: "acme", State: fleet.RunnerLaunching, CreatedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	ours("gha-linux-adopt", fleet.InstanceRunning, fleet.InstanceLabels{})
	e.deliver(fleet.ActionQueued, 1, "") // the job it was launched for, still queued
	if err := e.s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if got, want := strings.Join(e.lxd.Names(), " "), "gha-linux-adopt gha-linux-pet gha-linux-working other-linux-1"; got != want {
		t.Fatalf("instances left: %s\nwant the adopted, the pet, the busy one and the other deployment's: %s", got, want)
	}
	if s := e.runnersIn(fleet.RunnerStarted); len(s) != 1 || s[0].Name != "gha-linux-adopt" || e.lxd.Creates() != 0 {
		t.Fatalf("started = %+v, launches = %d; want the adopted runner to cover the job", s, e.lxd.Creates())
	}
	if d := e.runnersIn(fleet.RunnerDeleted); len(d) != 1 {
		t.Fatalf("deleted rows = %+v", d)
	}
}

// A launch interrupted while LXD was still starting its instance (the
// leader that asked lost its lease a moment before): the instance is not
// running yet when the next term reconciles, but its runner may be up a
// moment later and take a job. GitHub is asked first, and a busy runner
// is kept.
func TestReconcileKeepsInterruptedLaunchWhoseRunnerTookAJob(t *testing.T) {
	e := newEnv(t, testConfig())
	err := e.st.Update(context.Background(), func(tx fleet.Tx) error {
		return tx.PutRunner(fleet.Runner{Name: "gha-linux-late", Pool: "linux", Org: "acme", InstallationID: 1,
			RunnerID: 78, State: fleet.RunnerLaunching, CreatedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.lxd.Put(fleet.Instance{Name: "gha-linux-late", Managed: true, State: fleet.InstanceStopped,
		Labels: fleet.InstanceLabels{Owner: "gha-", RunnerID: 78, Org: "acme", InstallationID: 1}})
	e.gh.Add(78, fleettest.GitHubRunner{Name: "gha-linux-late", Online: true, Busy: true})
	if err := e.s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if got := strings.Join(e.lxd.Names(), " "); got != "gha-linux-late" {
		t.Fatalf("instances left: %q; the runner that took a job was deleted", got)
	}
	if r := e.runner("gha-linux-late"); r.State != fleet.RunnerBusy {
		t.Fatalf("runner is %s (%s), want kept busy", r.State, r.Reason)
	}
}

func TestShutdownCancelsStuckLaunchAfterGrace(t *testing.T) {
	cfg := testConfig()
	grace := DefaultTimeouts.ShutdownGrace
	e := newEnv(t, cfg)
	release := e.lxd.Block() // LXD never answers
	defer release()
	e.deliver(fleet.ActionQueued, 1, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.s.Run(ctx) }()
	waitUntil(t, "a launch is under way", func() bool { return len(e.runnersIn(fleet.RunnerLaunching)) == 1 })
	cancel()
	// The stuck launch is cancelled only once the grace has passed on the
	// clock: Run cannot return before.
	var advanced time.Duration
	for returned := false; !returned; {
		select {
		case <-done:
			returned = true
		case <-time.After(5 * time.Millisecond):
			e.clock.Advance(grace / 4)
			advanced += grace / 4
			if advanced > 100*grace {
				t.Fatal("Run did not return after the shutdown grace")
			}
		}
	}
	if advanced < grace {
		t.Fatalf("Run returned after %s of the %s grace", advanced, grace)
	}
	// The cut launch is to be torn down (GitHub record first) at the next
	// start; its job stays queued.
	if d := e.runnersIn(fleet.RunnerDeleting); len(d) != 1 || d[0].DeleteMode != fleet.ModeSurplus {
		t.Fatalf("the cut launch should await a careful teardown: %+v", e.runnersIn(""))
	}
	if j := e.job(1); j.State != fleet.JobQueued {
		t.Fatalf("job is %s, want still queued for the next start", j.State)
	}
	// The next start finishes the teardown and launches for the job again.
	release()
	e.s = e.newScheduler(cfg)
	e.clock.Advance(DefaultMaxBackoff)
	e.settle()
	if d := e.runnersIn(fleet.RunnerDeleted); len(d) != 1 {
		t.Fatalf("teardown not finished after restart: %+v", e.runnersIn(""))
	}
	if e.lxd.Creates() != 1 || len(e.runnersIn(fleet.RunnerStarted)) != 1 {
		t.Fatalf("job not relaunched after restart: creates=%d", e.lxd.Creates())
	}
}

func TestReconcileRemovesLeftoverRunnerRecords(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle() // one live runner of ours, so acme is a known org
	live := e.runnersIn(fleet.RunnerStarted)[0].Name
	e.gh.Add(901, fleettest.GitHubRunner{Name: "gha-linux-leftover"})                          // ours, offline, no instance: remove
	e.gh.Add(902, fleettest.GitHubRunner{Name: "gha-linux-working", Online: true, Busy: true}) // busy: keep
	e.gh.Add(903, fleettest.GitHubRunner{Name: "build-box-1"})                                 // not our prefix: keep
	if err := e.s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range e.gh.Names() {
		names[n] = true
	}
	if names["gha-linux-leftover"] || !names["gha-linux-working"] || !names["build-box-1"] || !names[live] {
		t.Fatalf("records after reconcile: %v", names)
	}
}

func TestJobGivenUpAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	for i := 0; i < DefaultMaxAttempts; i++ {
		e.settle()
		if got := len(e.runnersIn(fleet.RunnerStarted)); got != 1 {
			t.Fatalf("attempt %d: started runners = %d, want 1", i+1, got)
		}
		e.clock.Advance(DefaultRegistrationTimeout) // none ever comes online
		e.settle()
	}
	if j := e.job(1); j.State != fleet.JobAbandoned || j.Attempts != DefaultMaxAttempts || j.Reason == "" {
		t.Fatalf("job = %+v, want abandoned after %d attempts", j, DefaultMaxAttempts)
	}
	if e.lxd.Creates() != DefaultMaxAttempts || e.lxd.Count() != 0 {
		t.Fatalf("launches = %d, instances = %d", e.lxd.Creates(), e.lxd.Count())
	}
	if !strings.Contains(e.logs.String(), "job given up") {
		t.Fatal("no log line says the job was given up")
	}
}

func TestJobTimeline(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(fleet.RunnerStarted)[0]
	e.clock.Advance(time.Second)
	e.deliver(fleet.ActionInProgress, 1, r.Name)
	e.clock.Advance(time.Second)
	e.deliver(fleet.ActionCompleted, 1, r.Name)
	e.settle()
	want := "queued accepted launched runner_started runner_online in_progress completed instance_deleted"
	if got := e.timeline(1); got != want {
		t.Fatalf("timeline = %s\nwant       %s", got, want)
	}
	// An ignored job says why.
	e.deliver(fleet.ActionQueued, 2, "", "ubuntu-latest")
	e.settle()
	evs := e.events(2)
	if len(evs) != 2 || evs[1].Kind != "ignored" || evs[1].Detail != ReasonNoPool {
		t.Fatalf("ignored job timeline = %+v", evs)
	}
}

// A create whose answer was lost while the runner started and took a job
// (an LXD restart mid-start): the runner is kept, not killed.
func TestFailedCreateWhoseRunnerHoldsAJobIsKept(t *testing.T) {
	e := newEnv(t, testConfig())
	e.lxd.FailNext(1)
	e.gh.BusyOnCreate(true) // GitHub says the runner took a job at once
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	if busy := e.runnersIn(fleet.RunnerBusy); len(busy) != 1 {
		t.Fatalf("the runner GitHub says is busy should be kept as busy: %+v", e.runnersIn(""))
	}
	if e.gh.Removes() != 0 {
		t.Fatal("the busy runner's record was removed")
	}
}

func TestRecycleIdleAfterImageRebuild(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].MinIdle = 2
	e := newEnv(t, cfg)
	e.deliver(fleet.ActionQueued, 1, "") // the org becomes known; its job runs on one runner
	e.settle()
	r := e.runnersIn(fleet.RunnerStarted)
	e.deliver(fleet.ActionInProgress, 1, r[0].Name)
	e.settle()
	if got := len(e.runnersIn(fleet.RunnerStarted)); got != 2 {
		t.Fatalf("idle runners = %d, want min_idle 2", got)
	}
	old := e.runnersIn(fleet.RunnerStarted)
	e.clock.Advance(time.Minute)
	if err := e.s.RecycleIdle(context.Background(), "img", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	e.settle()
	idle := e.runnersIn(fleet.RunnerStarted)
	if len(idle) != 2 || len(e.runnersIn(fleet.RunnerBusy)) != 1 {
		t.Fatalf("after recycling: idle %d, busy %d; want 2 new idle and the busy one kept", len(idle), len(e.runnersIn(fleet.RunnerBusy)))
	}
	for _, n := range idle {
		for _, o := range old {
			if n.Name == o.Name {
				t.Fatalf("idle runner %s on the old image was kept", n.Name)
			}
		}
	}
}

// LXD goes away during a create. The launch keeps its JIT config (a single
// registration per job) and, once LXD answers again, creates the instance
// if nothing was made, replaces one that was made but does not run, and
// adopts one that runs.
func TestCreateWaitsOutLXDAndKeepsRegistration(t *testing.T) {
	for _, c := range []struct {
		halfMade fleet.InstanceState
		creates  int
	}{
		{halfMade: "", creates: 1},
		{halfMade: fleet.InstanceStopped, creates: 1},
		{halfMade: fleet.InstanceRunning, creates: 0},
	} {
		t.Run("left "+cmp.Or(string(c.halfMade), "nothing"), func(t *testing.T) {
			e := newEnv(t, testConfig())
			e.lxd.SetAway(true, c.halfMade)
			e.deliver(fleet.ActionQueued, 1, "")
			if err := e.s.Step(context.Background()); err != nil {
				t.Fatal(err)
			}
			e.askLXD(3) // a few rounds of asking LXD
			e.lxd.SetAway(false, "")
			waitUntil(t, "the launch ends", func() bool {
				e.clock.Advance(DefaultTimeouts.LXDRetryCap) // past the backoff it may still sleep
				return len(e.runnersIn(fleet.RunnerLaunching)) == 0
			})
			e.settle()

			if e.gh.JITCalls() != 1 {
				t.Fatalf("JIT configs = %d, want 1: the registration must outlive LXD's absence", e.gh.JITCalls())
			}
			if e.lxd.Creates() != c.creates {
				t.Fatalf("creates after LXD came back = %d, want %d", e.lxd.Creates(), c.creates)
			}
			rs := e.runnersIn("")
			if len(rs) != 1 || rs[0].State != fleet.RunnerStarted {
				t.Fatalf("runners = %+v, want one started", rs)
			}
			if in, err := e.lxd.Get(context.Background(), rs[0].Name); err != nil || !in.Running() {
				t.Fatalf("instance = %+v, %v; want it running", in, err)
			}
			if got, want := e.timeline(1), "queued accepted launched launch_waiting runner_started"; got != want {
				t.Fatalf("timeline = %s, want %s", got, want)
			}
			e.noSecretInLogs()
		})
	}
}

// A launch that waits for LXD gives up when the service stops: its
// registration is removed and the job stays queued for the next start.
func TestCreateWaitingForLXDEndsAtShutdown(t *testing.T) {
	e := newEnv(t, testConfig())
	e.lxd.SetAway(true, "")
	e.deliver(fleet.ActionQueued, 1, "")
	if err := e.s.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.askLXD(1)
	e.s.stopWork()
	e.s.wg.Wait()
	e.lxd.SetAway(false, "")
	e.settle()
	if j := e.job(1); j.State != fleet.JobQueued {
		t.Fatalf("job is %s, want queued", j.State)
	}
	if e.gh.Removes() != 1 {
		t.Fatalf("registrations removed = %d, want 1", e.gh.Removes())
	}
}

// A runner that GitHub lists online gets its timeline step and one
// readiness observation when the online check sees it; taking a job later
// adds neither again. A runner GitHub does not list online gets nothing.
func TestOnlineCheck(t *testing.T) {
	e := newEnv(t, testConfig())
	ready := func() []time.Duration { return e.m.Durations("RunnerReady") }
	ctx := context.Background()
	rs := e.startRunners(2)
	e.clock.Advance(3 * time.Second)
	e.s.checkOnline(ctx)
	if len(ready()) != 0 {
		t.Fatal("a runner GitHub lists offline was counted ready")
	}
	e.gh.Set(rs[0].Name, func(r *fleettest.GitHubRunner) { r.Online = true })
	e.s.checkOnline(ctx)
	e.s.checkOnline(ctx)
	if r := ready(); len(r) != 1 || r[0] != 3*time.Second {
		t.Fatalf("readiness observed %v, want once, 3s", r)
	}
	for _, r := range e.runnersIn(fleet.RunnerStarted) {
		if online := !r.OnlineAt.IsZero(); online != (r.Name == rs[0].Name) {
			t.Errorf("%s: online = %v", r.Name, online)
		}
	}

	e.clock.Advance(time.Second)
	e.deliver(fleet.ActionInProgress, rs[0].JobID, rs[0].Name)
	e.deliver(fleet.ActionInProgress, rs[1].JobID, rs[1].Name)
	e.settle()
	if r := ready(); len(r) != 2 || r[1] != 4*time.Second {
		t.Fatalf("readiness observed %v, want a second one of 4s for the runner seen first by in_progress", r)
	}
	for _, r := range rs {
		evs := e.events(r.JobID)
		var online []string
		for _, ev := range evs {
			if ev.Kind == "runner_online" {
				online = append(online, ev.Detail)
			}
		}
		want := r.Name + ": took a job"
		if r.Name == rs[0].Name {
			want = r.Name + ": online at GitHub"
		}
		if len(online) != 1 || online[0] != want {
			t.Errorf("job %d: runner_online steps %q, want [%q]", r.JobID, online, want)
		}
	}
}

// An idle runner that was online and that GitHub now lists offline (its
// runner process hung, its instance still runs) is replaced at reconcile:
// counted as unassigned, it would keep the queued job waiting. A runner
// never seen online is left to the registration timer.
func TestReconcileReplacesRunnerThatWentOffline(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx := context.Background()
	rs := e.startRunners(2)
	seen, never := rs[0], rs[1]
	e.gh.Set(seen.Name, func(r *fleettest.GitHubRunner) { r.Online = true })
	e.s.checkOnline(ctx)
	e.gh.Set(seen.Name, func(r *fleettest.GitHubRunner) { r.Online = false })

	if err := e.s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if r := e.runner(seen.Name); r.State != fleet.RunnerDeleted {
		t.Fatalf("runner that went offline: %+v; want deleted", r)
	}
	if r := e.runner(never.Name); r.State != fleet.RunnerStarted {
		t.Fatalf("runner never seen online: %+v; want it left started", r)
	}
	if _, err := e.lxd.Get(ctx, seen.Name); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("the offline runner's instance is still there: %v", err)
	}
	if e.gh.JITCalls() != 3 || len(e.runnersIn(fleet.RunnerStarted)) != 2 {
		t.Fatalf("JIT configs = %d, started = %d; want a replacement (3, 2)", e.gh.JITCalls(), len(e.runnersIn(fleet.RunnerStarted)))
	}
	if !strings.Contains(e.timeline(seen.JobID), "teardown") {
		t.Fatalf("job %d's timeline does not say why its runner went: %s", seen.JobID, e.timeline(seen.JobID))
	}
}

// Held launches: deliveries are applied and the job waits; released, it
// launches at once.
func TestHoldAndRelease(t *testing.T) {
	e := newEnv(t, testConfig())
	e.s.Hold("runner groups not checked")
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	if e.lxd.Creates() != 0 || e.job(1).State != fleet.JobQueued {
		t.Fatalf("launched while held: creates %d, job %s", e.lxd.Creates(), e.job(1).State)
	}
	if e.s.Held() != "runner groups not checked" {
		t.Fatalf("Held() = %q", e.s.Held())
	}
	e.s.Release()
	e.settle()
	if e.lxd.Creates() != 1 || e.s.Held() != "" {
		t.Fatalf("after release: creates %d, held %q", e.lxd.Creates(), e.s.Held())
	}
}

// A launch waiting for LXD meets its instance in neither state it knows
// (starting, or a restarted LXD not settled): its runner may be up, so it
// asks again rather than replace it, and adopts it once it runs.
func TestCreateWaitingForLXDDoesNotReplaceAStartingInstance(t *testing.T) {
	e := newEnv(t, testConfig())
	e.lxd.SetAway(true, fleet.InstanceOther)
	e.deliver(fleet.ActionQueued, 1, "")
	if err := e.s.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.askLXD(1)
	e.lxd.SetAway(false, "")
	e.askLXD(2) // LXD answers: the instance is still "other"
	name := e.runnersIn(fleet.RunnerLaunching)[0].Name
	if !e.lxd.Has(name) {
		t.Fatal("the starting instance was deleted")
	}
	in, _ := e.lxd.Get(context.Background(), name)
	in.State = fleet.InstanceRunning
	e.lxd.Put(in)
	waitUntil(t, "the launch ends", func() bool {
		e.clock.Advance(DefaultTimeouts.LXDRetryCap)
		return len(e.runnersIn(fleet.RunnerLaunching)) == 0
	})
	e.settle()
	if e.lxd.Creates() != 0 || e.gh.JITCalls() != 1 || len(e.runnersIn(fleet.RunnerStarted)) != 1 {
		t.Fatalf("creates %d, JIT configs %d, started %d: want the instance adopted", e.lxd.Creates(), e.gh.JITCalls(), len(e.runnersIn(fleet.RunnerStarted)))
	}
}

// A launch waiting for LXD whose start LXD had in fact finished: the
// runner took job 1, the job completed and the ephemeral instance deleted
// itself, all before the launch asked LXD again (seen in the LXD-restart
// fault test). It makes nothing again: its JIT config is spent, and an
// instance made with it would run no job.
func TestCreateWaitingForLXDMakesNothingForARunnerThatRanMeanwhile(t *testing.T) {
	e := newEnv(t, testConfig())
	e.lxd.SetAway(true, fleet.InstanceRunning)
	e.deliver(fleet.ActionQueued, 1, "")
	if err := e.s.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal("the launch does not wait for LXD:", err)
	}
	name := e.runnersIn(fleet.RunnerLaunching)[0].Name
	e.lxd.SetAway(false, "")
	e.deliver(fleet.ActionInProgress, 1, name)
	e.deliver(fleet.ActionCompleted, 1, name)
	if err := e.s.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.lxd.Delete(ctx, name); err != nil { // the runner exited: LXD deletes an ephemeral instance
		t.Fatal(err)
	}
	creates := e.lxd.Creates()
	e.clock.Advance(DefaultTimeouts.LXDRetryCap)
	waitUntil(t, "the runner torn down", func() bool {
		if err := e.s.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		return len(e.s.running(nil)) == 0 && len(e.runnersIn(fleet.RunnerDeleted)) == 1
	})
	if e.lxd.Creates() != creates || e.lxd.Has(name) || e.gh.JITCalls() != 1 {
		t.Fatalf("creates %d (was %d), instance %s there: %v, JIT configs %d: want nothing made again",
			e.lxd.Creates(), creates, name, e.lxd.Has(name), e.gh.JITCalls())
	}
	if !strings.Contains(e.logs.String(), "the runner came up and took a job meanwhile") {
		t.Fatalf("the log does not say why nothing was made:\n%s", e.logs.String())
	}
}

// forgetful is an LXD that, once back, first says the instance it made is
// not there, then refuses to make it again: adopted, not failed.
type forgetful struct {
	*fleettest.Instances
	mu     sync.Mutex
	forgot bool
}

func (f *forgetful) Get(ctx context.Context, name string) (fleet.Instance, error) {
	f.mu.Lock()
	forgot := f.forgot
	f.forgot = false
	f.mu.Unlock()
	if forgot {
		return fleet.Instance{}, fmt.Errorf("instance %s: %w", name, fleet.ErrNotFound)
	}
	return f.Instances.Get(ctx, name)
}

func TestCreateWaitingForLXDAdoptsWhatARefusedCreateMade(t *testing.T) {
	e := newEnv(t, testConfig())
	f := &forgetful{Instances: e.lxd}
	e.s = func() *Scheduler {
		s, err := New(testConfig(), Deps{State: e.st, Instances: f, GitHub: e.gh, Metrics: e.m, Clock: e.clock, Log: zerolog.New(e.logs)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	e.lxd.SetAway(true, fleet.InstanceRunning)
	e.deliver(fleet.ActionQueued, 1, "")
	if err := e.s.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.askLXD(1)
	f.mu.Lock()
	f.forgot = true
	f.mu.Unlock()
	e.lxd.SetAway(false, "")
	waitUntil(t, "the launch ends", func() bool {
		e.clock.Advance(DefaultTimeouts.LXDRetryCap)
		return len(e.runnersIn(fleet.RunnerLaunching)) == 0
	})
	e.settle()
	if got := e.runnersIn(""); len(got) != 1 || got[0].State != fleet.RunnerStarted || e.gh.JITCalls() != 1 {
		t.Fatalf("runners %+v, JIT configs %d: want the one instance adopted", got, e.gh.JITCalls())
	}
}
