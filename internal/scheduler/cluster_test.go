package scheduler

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// newClusterEnv is newEnv with a two-member cluster that the scheduler
// reads, so that it places runners itself.
func newClusterEnv(t *testing.T, cfg Config) (*env, *fleettest.Cluster) {
	t.Helper()
	e := newEnv(t, cfg)
	cl := fleettest.NewCluster(fleet.Member{Name: "node1", Groups: []string{"default"}}, fleet.Member{Name: "node2", Groups: []string{"default"}})
	s, err := New(cfg, Deps{State: e.st, Instances: e.lxd, GitHub: e.gh, Cluster: cl, Metrics: e.m, Clock: e.clock, Log: zerolog.New(e.logs)})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	if err := e.s.Reconcile(context.Background()); err != nil { // reads the members, as Run does first
		t.Fatal(err)
	}
	return e, cl
}

func (e *env) located(name string) string {
	e.t.Helper()
	in, err := e.lxd.Get(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return in.Location
}

// A member stops answering with a busy and an idle runner on it. Its busy
// runner's job is reported lost (GitHub fails it; it is not run again);
// neither counts as capacity, so the queued jobs get runners on the other
// member at once; nothing is asked of the dead member. When it answers
// again, what is left of ours there goes.
func TestMemberLostAndBack(t *testing.T) {
	e, cl := newClusterEnv(t, testConfig())
	ctx := context.Background()
	rs := e.startRunners(3) // jobs 1, 2, 3
	on := map[string][]string{}
	for _, r := range rs {
		on[e.located(r.Name)] = append(on[e.located(r.Name)], r.Name)
	}
	if len(on["node1"]) != 2 || len(on["node2"]) != 1 {
		t.Fatalf("placed %v, want two on node1 and one on node2 (fewest of ours first, then LXD's order)", on)
	}
	busy, idle := on["node1"][0], on["node1"][1]
	e.deliver(fleet.ActionInProgress, 1, busy)
	e.settle()

	cl.SetStatus("node1", fleet.MemberOffline, "No heartbeat for 21s")
	e.lxd.SetMemberDown("node1", true)
	e.s.refreshCluster(ctx, false)
	e.settle()
	if err := e.s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	e.settle()

	if tl := e.timeline(1); !strings.Contains(tl, "runner_lost") {
		t.Errorf("job 1's timeline = %s, want runner_lost", tl)
	}
	if j := e.job(1); !strings.Contains(j.Reason, "cluster member node1 does not answer") || j.State != fleet.JobInProgress {
		t.Errorf("job 1 = %s %q", j.State, j.Reason)
	}
	// Jobs 2 and 3 were covered by node2's runner and node1's idle one:
	// one more runner, on node2.
	if n := e.gh.JITCalls(); n != 4 {
		t.Fatalf("launches = %d, want 4 (one to replace node1's idle runner)", n)
	}
	for _, r := range e.runnersIn(fleet.RunnerStarted) {
		if at := e.located(r.Name); at != "node2" {
			t.Errorf("started runner %s on %s", r.Name, at)
		}
	}
	if _, ok := e.gh.Records()[idle]; ok {
		t.Errorf("node1's idle runner still registered at GitHub")
	}
	if r := e.runner(idle); r.State != fleet.RunnerDeleting || r.DeleteMode != fleet.ModeForce {
		t.Errorf("node1's idle runner = %s %s, want deleting (force), waiting for node1", r.State, r.DeleteMode)
	}

	// GitHub fails the lost runner's job.
	e.deliver(fleet.ActionCompleted, 1, busy)
	e.settle()
	if n := e.lxd.Deletes(busy) + e.lxd.Deletes(idle); n != 0 {
		t.Fatalf("%d deletes asked of the member that does not answer", n)
	}
	if r := e.runner(busy); r.State != fleet.RunnerDeleting {
		t.Fatalf("lost runner = %s", r.State)
	}

	cl.SetStatus("node1", fleet.MemberOnline, "")
	e.lxd.SetMemberDown("node1", false)
	e.s.refreshCluster(ctx, false)
	e.settle()
	for _, name := range []string{busy, idle} {
		if e.lxd.Has(name) {
			t.Errorf("%s left on node1 after it came back", name)
		}
		if r := e.runner(name); r.State != fleet.RunnerDeleted {
			t.Errorf("%s = %s", name, r.State)
		}
	}
	if j := e.job(1); !strings.Contains(j.Reason, "does not answer") {
		t.Errorf("job 1's reason after it completed = %q, want the loss kept", j.Reason)
	}
}

// Before LXD notices (its heartbeats take about 20 s), a launch onto a
// member that does not answer fails with ErrMemberUnreachable: the member
// is skipped from then on, the job gets a runner on the other member at
// once, and the pool is not held back.
func TestLaunchOnUnreachableMemberGoesElsewhere(t *testing.T) {
	e, _ := newClusterEnv(t, testConfig())
	e.lxd.SetMemberDown("node1", true)
	e.deliver(fleet.ActionQueued, 1, "")
	e.settle()
	started := e.runnersIn(fleet.RunnerStarted)
	if len(started) != 1 || e.located(started[0].Name) != "node2" {
		t.Fatalf("started = %+v, want one runner on node2", started)
	}
	if hold := e.s.notBefore()["linux"]; !hold.IsZero() {
		t.Errorf("pool held until %v after a dead member refused a launch", hold)
	}
	if !strings.Contains(e.logs.String(), "no runner goes there until it does") {
		t.Errorf("no log line about node1")
	}
	// Its failed launch's registration is gone; the instance, which was
	// never made, is asked for once node1 is trusted again.
	if n := len(e.gh.Records()); n != 1 {
		t.Errorf("runner records = %d, want the started runner's only", n)
	}
	e.lxd.SetMemberDown("node1", false)
	e.clock.Advance(suspectFor)
	e.s.refreshCluster(context.Background(), false)
	e.settle()
	if n := len(e.runnersIn(fleet.RunnerDeleting)); n != 0 {
		t.Errorf("%d runners still deleting", n)
	}
}

// A job whose pool no member can run waits, with the reason on the job
// (what `jobs` and the status page show) and in its timeline; the pool is
// logged once. The reason goes when the job no longer waits.
func TestUnplaceablePoolWaitsWithReason(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[1].Architecture = "aarch64" // gpu
	cfg.Pools[0].Target = "node9"         // linux
	e, _ := newClusterEnv(t, cfg)
	e.deliver(fleet.ActionQueued, 1, "", "self-hosted", "gpu")
	e.deliver(fleet.ActionQueued, 2, "")
	e.settle()
	e.settle()
	if n := e.gh.JITCalls() + e.lxd.Creates(); n != 0 {
		t.Fatalf("%d launches for pools no member can run", n)
	}
	if r := e.job(1).Reason; r != "no cluster member runs architecture aarch64 (they run x86_64)" {
		t.Errorf("job 1 reason = %q", r)
	}
	if r := e.job(2).Reason; r != "target node9: no such cluster member" {
		t.Errorf("job 2 reason = %q", r)
	}
	if tl := e.timeline(1); tl != "queued accepted waiting" {
		t.Errorf("job 1 timeline = %s", tl)
	}
	if n := strings.Count(e.logs.String(), "pool launches nothing"); n != 2 {
		t.Errorf("%d log lines about pools that launch nothing, want 2 (once each):\n%s", n, e.logs)
	}
	e.deliver(fleet.ActionCompleted, 2, "") // cancelled
	e.settle()
	if r := e.job(2).Reason; r != "" {
		t.Errorf("cancelled job's reason = %q", r)
	}
}

// A drained member gets no runner and its idle runners leave; its busy
// ones finish their jobs there.
func TestDrainedMember(t *testing.T) {
	e, _ := newClusterEnv(t, testConfig())
	rs := e.startRunners(2) // one on each member
	var busy, idle string
	for _, r := range rs {
		if e.located(r.Name) == "node1" {
			busy = r.Name
		} else {
			idle = r.Name
		}
	}
	e.deliver(fleet.ActionInProgress, 1, busy)
	e.settle()
	err := e.st.Update(context.Background(), func(tx fleet.Tx) error { return tx.SetMemberDrained("node2", true) })
	if err != nil {
		t.Fatal(err)
	}
	e.settle()
	e.settle()
	if e.lxd.Has(idle) {
		t.Errorf("idle runner on the drained member still there")
	}
	for _, r := range e.runnersIn(fleet.RunnerStarted) {
		if at := e.located(r.Name); at != "node1" {
			t.Errorf("runner %s started on %s, drained", r.Name, at)
		}
	}
	if !e.lxd.Has(busy) {
		t.Errorf("busy runner deleted")
	}
	if n := e.gh.JITCalls(); n != 3 {
		t.Errorf("launches = %d, want 3 (one to replace the retired runner)", n)
	}
}

// A standalone LXD server is one member that takes no target: launches
// name none, and still only pools it can run launch.
func TestStandaloneServer(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[1].Architecture = "aarch64" // gpu
	e := newEnv(t, cfg)
	s, err := New(cfg, Deps{State: e.st, Instances: e.lxd, GitHub: e.gh, Cluster: fleettest.NewStandalone("host"), Metrics: e.m,
		Clock: e.clock, Log: zerolog.New(e.logs)})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	if err := e.s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs := e.startRunners(2)
	for _, r := range rs {
		if spec, _ := e.lxd.Spec(r.Name); spec.Target != "" {
			t.Errorf("%s launched with target %q on a standalone server", r.Name, spec.Target)
		}
	}
	e.deliver(fleet.ActionQueued, 9, "", "self-hosted", "gpu")
	e.settle()
	if r := e.job(9).Reason; r != "no LXD server runs architecture aarch64 (it runs x86_64)" {
		t.Errorf("job 9 reason = %q", r)
	}
}
