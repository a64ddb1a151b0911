package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

func preparedRows(pool string, state fleet.PreparedState, image string, n int) []fleet.Prepared {
	var out []fleet.Prepared
	for i := 0; i < n; i++ {
		out = append(out, fleet.Prepared{Name: fmt.Sprintf("%s-p%d", pool, i), Pool: pool, Image: image, State: state,
			CreatedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	return out
}

func TestDecidePrepared(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].Prepared = 2
	imgs := map[string]string{"img": "fp1"}
	tests := []struct {
		name       string
		snap       Snapshot
		prepares   int
		unprepares []string // reasons
		taken      int      // launches that take a prepared instance
		cold       int      // launches that create
	}{
		{"empty: prepare the pool's count", Snapshot{Now: t0, Images: imgs}, 2, nil, 0, 0},
		{"prepares a few at a time", Snapshot{Now: t0, Images: imgs,
			Prepared: preparedRows("linux", fleet.PreparedCreating, "", 0)}, 2, nil, 0, 0},
		{"being made count", Snapshot{Now: t0, Images: imgs, Prepared: preparedRows("linux", fleet.PreparedCreating, "", 2)}, 0, nil, 0, 0},
		{"ready: nothing to do", Snapshot{Now: t0, Images: imgs, Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 2)}, 0, nil, 0, 0},
		{"a job takes one, which is made again", Snapshot{Now: t0, Images: imgs, Queued: queuedJobs("linux", 1),
			Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 2)}, 1, nil, 1, 0},
		{"three jobs: two take, one is cold", Snapshot{Now: t0, Images: imgs, Queued: queuedJobs("linux", 3),
			Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 2)}, 2, nil, 2, 1},
		{"image changed: replaced", Snapshot{Now: t0, Images: map[string]string{"img": "fp2"},
			Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 2)}, 2, []string{"image img changed", "image img changed"}, 0, 0},
		{"image changed: a job does not take an old one", Snapshot{Now: t0, Images: map[string]string{"img": "fp2"}, Queued: queuedJobs("linux", 1),
			Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 1)}, 2, []string{"image img changed"}, 0, 1},
		{"image not known yet: kept", Snapshot{Now: t0, Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 2)}, 0, nil, 0, 0},
		{"older than max_idle_age: replaced", Snapshot{Now: t0.Add(DefaultMaxIdleAge), Images: imgs,
			Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 1)}, 2, []string{"older than max_idle_age"}, 0, 0},
		{"more than the pool keeps", Snapshot{Now: t0, Images: imgs, Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 3)},
			0, []string{"more than the pool keeps prepared"}, 0, 0},
		{"of a pool no longer configured", Snapshot{Now: t0, Images: imgs, Prepared: preparedRows("old", fleet.PreparedReady, "fp1", 1)},
			2, []string{"its pool is no longer configured"}, 0, 0},
		{"being deleted: not counted", Snapshot{Now: t0, Images: imgs, Prepared: preparedRows("linux", fleet.PreparedDeleting, "fp1", 2)}, 2, nil, 0, 0},
		{"not counted against the runner limit", Snapshot{Now: t0, Images: imgs, Runners: runners("linux", fleet.RunnerBusy, 4)}, 2, nil, 0, 0},
		{"a job at the limit takes none", Snapshot{Now: t0, Images: imgs, Queued: queuedJobs("linux", 1), Runners: runners("linux", fleet.RunnerBusy, 4),
			Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 2)}, 0, nil, 0, 0},
		{"a failed prepare holds the pool's prepares back", Snapshot{Now: t0, Images: imgs,
			PrepareNotBefore: map[string]time.Time{"linux": t0.Add(time.Second)}}, 0, nil, 0, 0},
		{"drained: none made", Snapshot{Now: t0, Images: imgs, Drained: map[string]bool{"linux": true}}, 0, nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(cfg, tt.snap)
			if len(d.Prepares) != tt.prepares {
				t.Errorf("prepares = %d, want %d", len(d.Prepares), tt.prepares)
			}
			var why []string
			for _, u := range d.Unprepares {
				why = append(why, u.Reason)
			}
			if fmt.Sprint(why) != fmt.Sprint(tt.unprepares) {
				t.Errorf("unprepares = %q, want %q", why, tt.unprepares)
			}
			taken, cold := 0, 0
			for _, l := range d.Launches {
				if l.Prepared != "" {
					taken++
				} else {
					cold++
				}
			}
			if taken != tt.taken || cold != tt.cold {
				t.Errorf("launches taking a prepared instance = %d, cold = %d; want %d, %d", taken, cold, tt.taken, tt.cold)
			}
		})
	}

	// limits.max_prepared caps all pools together.
	cfg.Pools[1].Prepared = 2
	cfg.MaxPrepared = 3
	d := Decide(cfg, Snapshot{Now: t0, Images: imgs, Prepared: preparedRows("linux", fleet.PreparedReady, "fp1", 2)})
	if len(d.Prepares) != 1 || d.Prepares[0].Pool != "gpu" {
		t.Errorf("with max_prepared 3 and 2 prepared: prepares = %+v, want one for gpu", d.Prepares)
	}
}

func TestDecidePairsLaunchWithFreeingSlot(t *testing.T) {
	cfg := testConfig()
	done := runners("linux", fleet.RunnerDeleting, 2)
	for i := range done {
		done[i].DeleteMode = fleet.ModeJobDone
	}
	surplus := runners("linux", fleet.RunnerDeleting, 1)
	surplus[0].Name, surplus[0].DeleteMode = "surplus", fleet.ModeSurplus
	busy := runners("linux", fleet.RunnerBusy, 1)
	snap := Snapshot{Now: t0, Queued: queuedJobs("linux", 4), Runners: cat(busy, done, surplus)}
	d := Decide(cfg, snap)
	var after []string
	for _, l := range d.Launches {
		after = append(after, l.After)
	}
	// 4 slots: 4 runners hold them; two are being deleted for good (their
	// jobs are done), so two launches go ahead and wait for their slots; a
	// surplus teardown may yet be kept (its runner took a job), so it
	// frees nothing.
	if want := fmt.Sprint([]string{done[0].Name, done[1].Name}); fmt.Sprint(after) != want {
		t.Fatalf("launches wait for %v, want %v", after, want)
	}
	// Once paired, a slot is not promised twice.
	snap.Paired = map[string]bool{done[0].Name: true, done[1].Name: true}
	if d := Decide(cfg, snap); len(d.Launches) != 0 {
		t.Fatalf("launches = %+v, want none: both freeing slots are promised", d.Launches)
	}
	// A pool at its own limit waits only for a slot of its own.
	gpuDone := runners("gpu", fleet.RunnerDeleting, 1)
	gpuDone[0].DeleteMode = fleet.ModeJobDone
	d = Decide(cfg, Snapshot{Now: t0, Queued: queuedJobs("gpu", 1), Runners: cat(done[:1], gpuDone)})
	if len(d.Launches) != 1 || d.Launches[0].After != gpuDone[0].Name {
		t.Fatalf("gpu launch = %+v, want one waiting for %s", d.Launches, gpuDone[0].Name)
	}
}

func TestDecideWarmOrganizations(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].MinIdle = 1
	cfg.Pools[0].Organizations = []string{"ACME"}
	orgs := []fleet.Org{{InstallationID: 1, Login: "acme"}, {InstallationID: 2, Login: "beta"}}
	d := Decide(cfg, Snapshot{Now: t0, Orgs: orgs})
	if len(d.Launches) != 1 || d.Launches[0].Org != "acme" {
		t.Fatalf("launches = %+v, want one warm runner for acme only", d.Launches)
	}
	if p, reason := cfg.route([]string{"self-hosted", "linux"}, "beta", "beta/app", false); p == nil || p.Name == "linux" {
		t.Fatalf("a beta job routed to %v (%s); pool linux serves acme only", p, reason)
	}
	cfg.Pools = cfg.Pools[:1]
	if p, reason := cfg.route([]string{"self-hosted", "linux"}, "beta", "beta/app", false); p != nil || reason != ReasonOrgNotServed {
		t.Fatalf("route = %v, %q; want none, %q", p, reason, ReasonOrgNotServed)
	}
}

// installed records an installation as a webhook handler would.
func (e *env) installed(id int64, login string, state fleet.InstallationState) {
	e.t.Helper()
	err := e.st.Update(context.Background(), func(tx fleet.Tx) error {
		return tx.PutInstallation(fleet.Installation{ID: id, Login: login, State: state, At: e.clock.Now()})
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) idleFor(org string) int {
	n := 0
	for _, r := range e.runnersIn(fleet.RunnerStarted) {
		if r.Org == org && r.JobID == 0 {
			n++
		}
	}
	return n
}

// With an empty state and no job, warm runners are made for every
// organization the App is installed on, as soon as the installations are
// listed; an installation added later, by the listing or its webhook,
// gets its own; one removed loses them.
func TestWarmPoolFromInstallations(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].MinIdle = 2
	e := newEnv(t, cfg)
	e.gh.SetInstallations(fleet.Org{InstallationID: 7, Login: "acme"})
	e.settle()
	if n := len(e.runnersIn("")); n != 0 {
		t.Fatalf("runners before the installations are known = %d", n)
	}
	e.s.refreshInstallations(context.Background())
	e.settle()
	if n := e.idleFor("acme"); n != 2 {
		t.Fatalf("warm runners for acme = %d, want 2, without any job", n)
	}
	for _, r := range e.runnersIn(fleet.RunnerStarted) {
		if r.InstallationID != 7 {
			t.Fatalf("runner %s of installation %d, want 7", r.Name, r.InstallationID)
		}
	}

	// An installation webhook: beta gets its warm runners at the next step.
	e.installed(8, "beta", fleet.InstallationActive)
	e.settle()
	if n := e.idleFor("beta"); n != 2 {
		t.Fatalf("warm runners for beta after its installation = %d, want 2", n)
	}
	// The next listing agrees with the webhook: nothing changes.
	e.gh.SetInstallations(fleet.Org{InstallationID: 7, Login: "acme"}, fleet.Org{InstallationID: 8, Login: "beta"})
	e.clock.Advance(time.Second)
	e.s.refreshInstallations(context.Background())
	e.settle()
	if a, b := e.idleFor("acme"), e.idleFor("beta"); a != 2 || b != 2 {
		t.Fatalf("warm runners acme %d, beta %d; want 2 each", a, b)
	}

	// Suspended: beta's idle runners go, GitHub's records first.
	e.clock.Advance(time.Second)
	e.installed(8, "beta", fleet.InstallationSuspended)
	e.settle()
	if n := e.idleFor("beta"); n != 0 {
		t.Fatalf("warm runners for a suspended installation = %d, want 0", n)
	}
	// A listing that no longer has acme (uninstalled while no webhook
	// reached us) takes acme's away too; a late listing that still has it
	// changes nothing after that.
	e.gh.SetInstallations()
	e.clock.Advance(time.Second)
	e.s.refreshInstallations(context.Background())
	e.settle()
	if n := len(e.runnersIn(fleet.RunnerStarted)); n != 0 {
		t.Fatalf("idle runners with no installation = %d, want 0", n)
	}
	if got := e.lxd.Count(); got != 0 {
		t.Fatalf("instances left = %d", got)
	}
	e.noSecretInLogs()
}

// A failed listing keeps what is known; the warm pool of the installations
// known before stays.
func TestWarmPoolKeepsOrgsWhenListingFails(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].MinIdle = 1
	e := newEnv(t, cfg)
	e.gh.SetInstallations(fleet.Org{InstallationID: 7, Login: "acme"})
	e.s.refreshInstallations(context.Background())
	e.settle()
	e.gh.FailInstallations(1)
	e.s.refreshInstallations(context.Background())
	e.settle()
	if n := e.idleFor("acme"); n != 1 {
		t.Fatalf("warm runners after a failed listing = %d, want 1", n)
	}
}

// preparedIn lists the prepared instances' rows in a state ("" for all).
func (e *env) preparedIn(state fleet.PreparedState) []fleet.Prepared {
	e.t.Helper()
	all := fleettest.Read(e.t, e.st, func(tx fleet.Tx) ([]fleet.Prepared, error) { return tx.PreparedInstances() })
	var out []fleet.Prepared
	for _, p := range all {
		if state == "" || p.State == state {
			out = append(out, p)
		}
	}
	return out
}

// noJITBeforeTaken checks that no instance holds a JIT config unless a
// runner (a job's launch) made or took it.
func (e *env) noJITBeforeTaken() {
	e.t.Helper()
	runners := map[string]bool{}
	for _, r := range e.runnersIn("") {
		runners[r.Name] = true
	}
	for name, spec := range e.lxd.Specs() {
		if spec.JITConfig != "" && !runners[name] {
			e.t.Fatalf("instance %s holds a JIT config and no runner took it", name)
		}
	}
	for _, p := range e.preparedIn("") {
		if spec, _ := e.lxd.Spec(p.Name); spec.JITConfig != "" {
			e.t.Fatalf("prepared instance %s holds a JIT config", p.Name)
		}
	}
}

func TestPreparedInstancesTakenByJobsAndReplacedOnImageChange(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].Prepared = 2
	e := newEnv(t, cfg)
	e.s.refreshImages(context.Background())
	e.settle()
	ready := e.preparedIn(fleet.PreparedReady)
	if len(ready) != 2 || e.lxd.Prepares() != 2 || e.gh.JITCalls() != 0 {
		t.Fatalf("prepared %d ready (%d made), %d JIT configs; want 2, 2, 0", len(ready), e.lxd.Prepares(), e.gh.JITCalls())
	}
	for _, p := range ready {
		in, err := e.lxd.Get(context.Background(), p.Name)
		if err != nil || in.State != fleet.InstanceStopped || p.Image != "fp-img" {
			t.Fatalf("prepared %+v: instance %+v, %v; want stopped, of fp-img", p, in, err)
		}
	}
	e.noJITBeforeTaken()

	// A job takes the oldest: JIT config, set it, start. Nothing created.
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	started := e.runnersIn(fleet.RunnerStarted)
	if len(started) != 1 || started[0].Name != ready[0].Name || e.lxd.Creates() != 0 {
		t.Fatalf("started %+v, creates %d; want the prepared %s started, nothing created", started, e.lxd.Creates(), ready[0].Name)
	}
	spec, _ := e.lxd.Spec(started[0].Name)
	if spec.JITConfig != fleettest.JITSecret(started[0].Name) || spec.Labels.JobID != 1 || spec.Labels.RunnerID != started[0].RunnerID {
		t.Fatalf("taken instance's spec = %+v: want the runner's JIT config and labels", spec.Labels)
	}
	if tl := e.timeline(1); !strings.Contains(tl, "launched runner_started") {
		t.Fatalf("timeline = %q", tl)
	}
	// ... and the pool is prepared again.
	if n := len(e.preparedIn(fleet.PreparedReady)); n != 2 || e.lxd.Prepares() != 3 {
		t.Fatalf("prepared after a take = %d (%d made), want 2 (3)", n, e.lxd.Prepares())
	}
	e.noJITBeforeTaken()

	// The image changes: every prepared instance of the old one is
	// replaced, none ever given a runner.
	old := e.preparedIn(fleet.PreparedReady)
	e.lxd.SetImage("img", "fp-new")
	e.s.refreshImages(context.Background())
	e.settle()
	now := e.preparedIn(fleet.PreparedReady)
	if len(now) != 2 {
		t.Fatalf("prepared after the image changed = %d, want 2", len(now))
	}
	for _, p := range now {
		if p.Image != "fp-new" {
			t.Fatalf("prepared %s of %s, want fp-new", p.Name, p.Image)
		}
	}
	for _, p := range old {
		if e.lxd.Has(p.Name) {
			t.Fatalf("prepared instance %s of the old image is still there", p.Name)
		}
	}
	if e.gh.JITCalls() != 1 {
		t.Fatalf("JIT configs = %d, want 1: only the job's", e.gh.JITCalls())
	}
	e.noJITBeforeTaken()

	// Too old: replaced too.
	e.clock.Advance(DefaultMaxIdleAge)
	e.settle()
	for _, p := range e.preparedIn("") {
		if !p.CreatedAt.Equal(e.clock.Now()) {
			t.Fatalf("prepared %s from %v kept past max_idle_age", p.Name, p.CreatedAt)
		}
	}
	e.noSecretInLogs()
}

// A restart finds a prepare cut short: kept when its instance was made,
// forgotten when not; an instance of ours nobody knows is deleted.
func TestReconcilePrepared(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].Prepared = 1
	e := newEnv(t, cfg)
	ctx := context.Background()
	made := fleet.Prepared{Name: "gha-linux-made", Pool: "linux", State: fleet.PreparedCreating, CreatedAt: t0}
	lost := fleet.Prepared{Name: "gha-linux-lost", Pool: "linux", State: fleet.PreparedCreating, CreatedAt: t0}
	if err := e.st.Update(ctx, func(tx fleet.Tx) error {
		if err := tx.PutPrepared(made); err != nil {
			return err
		}
		return tx.PutPrepared(lost)
	}); err != nil {
		t.Fatal(err)
	}
	labels := fleet.InstanceLabels{Owner: "gha-", Pool: "linux"}
	e.lxd.Put(fleet.Instance{Name: made.Name, Managed: true, Labels: labels, State: fleet.InstanceStopped, Image: "fp-img"})
	e.lxd.Put(fleet.Instance{Name: "gha-linux-orphan", Managed: true, Labels: labels, State: fleet.InstanceStopped})
	if err := e.s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	e.s.refreshImages(ctx)
	e.settle()
	got := e.preparedIn("")
	if len(got) != 1 || got[0].Name != made.Name || got[0].State != fleet.PreparedReady || got[0].Image != "fp-img" {
		t.Fatalf("prepared after reconcile = %+v, want only %s, ready", got, made.Name)
	}
	if names := e.lxd.Names(); fmt.Sprint(names) != fmt.Sprint([]string{made.Name}) {
		t.Fatalf("instances = %v, want only %s", names, made.Name)
	}
}

// slowDeletes holds every instance delete until released.
type slowDeletes struct {
	*fleettest.Instances
	mu   sync.Mutex
	gate chan struct{}
}

func (s *slowDeletes) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Instances.Delete(ctx, name)
}

// A full pool: a job waits for a slot. When a job completes, the next
// launch asks GitHub for its JIT config while the completed job's
// instance is being deleted, and makes its instance only once that one
// is gone: the limit holds at every moment.
func TestLaunchOverlapsJITWithTeardown(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInstances = 1
	e := newEnv(t, cfg)
	slow := &slowDeletes{Instances: e.lxd}
	e.s = func() *Scheduler {
		s, err := New(cfg, Deps{State: e.st, Instances: slow, GitHub: e.gh, Metrics: e.m, Clock: e.clock})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	r := e.startRunners(1)[0]
	e.deliver(fleet.ActionQueued, 2, "")
	e.settle()
	if e.gh.JITCalls() != 1 {
		t.Fatalf("JIT configs = %d, want 1: job 2 waits for the slot", e.gh.JITCalls())
	}
	slow.mu.Lock()
	slow.gate = make(chan struct{})
	slow.mu.Unlock()
	e.deliver(fleet.ActionInProgress, 1, r.Name)
	e.deliver(fleet.ActionCompleted, 1, r.Name)
	if err := e.s.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "job 2's JIT config asked for while job 1's instance is being deleted", func() bool { return e.gh.JITCalls() == 2 })
	time.Sleep(20 * time.Millisecond)
	if e.lxd.Creates() != 1 || !e.lxd.Has(r.Name) {
		t.Fatalf("creates = %d, job 1's instance there: %v; want job 2's instance made only after", e.lxd.Creates(), e.lxd.Has(r.Name))
	}
	slow.mu.Lock()
	close(slow.gate)
	slow.gate = nil
	slow.mu.Unlock()
	waitUntil(t, "job 2's instance made", func() bool { return e.lxd.Creates() == 2 })
	e.s.wg.Wait()
	if p := e.lxd.Peak(); p != 1 {
		t.Fatalf("peak instances = %d, limit 1", p)
	}
	if n := len(e.runnersIn(fleet.RunnerStarted)); n != 1 {
		t.Fatalf("started runners = %d, want 1", n)
	}
	if tl := e.timeline(2); !strings.Contains(tl, "launched runner_started") {
		t.Fatalf("job 2's timeline = %q", tl)
	}
}
