package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
)

// These tests run the service against the shared three-member cluster
// (cluster_test.go) as a production deployment does: over HTTPS, with its
// own client certificate and the cluster's certificate pinned, given every
// member's address with node1's first. The tests see LXD through node2's
// unix socket, which outlives node1.

// newClusterEnv is newEnv on the shared cluster over HTTPS.
func newClusterEnv(t *testing.T, tc *testCluster, o options) *env {
	t.Helper()
	o.lxdSocket, o.image, o.lxdYAML = tc.member("node2").socket(), tc.image, tc.serviceLXD()
	e := newEnv(t, o)
	e.waitLog(`"lxd":"https://` + tc.member("node1").addr + `"`) // the first address, over HTTPS
	return e
}

// pool is the YAML of one more pool with the test's image and profile.
func pool(name, labels, extra string) string {
	return fmt.Sprintf("  - name: %s\n    labels: [%s]\n    image: {image}\n    profiles: [default, {profile}]\n%s", name, labels, extra)
}

// adminGet decodes an admin API answer (into a *string: the body).
func (e *env) adminGet(path string, out any) {
	e.t.Helper()
	if err := e.adminTry(path, out); err != nil {
		e.t.Fatal(err)
	}
}

// adminTry is adminGet that returns what went wrong.
func (e *env) adminTry(path string, out any) error {
	resp, err := http.Get(e.admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if s, ok := out.(*string); ok {
		*s = string(b)
		return nil
	}
	return json.Unmarshal(b, out)
}

// cli runs the service binary's admin CLI against the test's service.
func (e *env) cli(args ...string) (string, error) {
	cmd := exec.Command(binPath, append(args, "--admin", strings.TrimPrefix(e.admin, "http://"))...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runningOn returns, by job, the member whose runner runs it now.
func (e *env) runningOn() map[int64]string {
	out := map[int64]string{}
	at := map[string]string{}
	for _, in := range e.instances() {
		at[in.Name] = in.Location
	}
	for _, j := range e.fake.Jobs() {
		if j.Status == ghfake.StatusInProgress && at[j.RunnerName] != "" {
			out[j.ID] = at[j.RunnerName]
		}
	}
	return out
}

func queue(e *env, n int, labels []string, d time.Duration) []int64 {
	var ids []int64
	for range n {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: labels, Repo: "acme/app", Duration: d}))
	}
	return ids
}

func (e *env) checkSucceeded(ids ...int64) {
	e.t.Helper()
	for _, id := range ids {
		if j, _ := e.fake.Job(id); j.Conclusion != ghfake.ConclusionSuccess {
			e.t.Errorf("job %d: %q on %s", id, j.Conclusion, j.RunnerName)
		}
	}
}

// Test 1: pools that target two cluster groups, two of them sharing
// group gpu and its limit of two runners (one member with two GPUs). 20
// jobs land on the right members, never more than two on gpu, all
// complete, and nothing is left.
func TestClusterGroupsOverHTTPS(t *testing.T) {
	tc := sharedCluster(t)
	e := newClusterEnv(t, tc, options{maxInstances: 6, limits: "  targets: {'@gpu': 2}",
		extraPool: pool("cpu", "self-hosted, cpu", `    target: "@cpu"`+"\n") +
			pool("gpu-a", "self-hosted, gpu-a", `    target: "@gpu"`+"\n") +
			pool("gpu-b", "self-hosted, gpu-b", `    target: "@gpu"`+"\n")})

	var mu sync.Mutex
	placed := map[string]string{} // instance -> member
	pools := map[string]string{}  // instance -> pool
	peakGPU := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			onGPU := 0
			mu.Lock()
			for _, in := range e.instances() {
				if in.Location == "" {
					continue
				}
				placed[in.Name], pools[in.Name] = in.Location, in.Labels.Pool
				if in.Location == "node3" {
					onGPU++
				}
			}
			peakGPU = max(peakGPU, onGPU)
			mu.Unlock()
		}
	})
	var ids []int64
	for i := range 10 {
		ids = append(ids, queue(e, 1, []string{"self-hosted", "cpu"}, 1500*time.Millisecond)...)
		ids = append(ids, queue(e, 1, []string{"self-hosted", []string{"gpu-a", "gpu-b"}[i%2]}, time.Second)...)
	}
	e.waitCompleted(ids...)
	e.waitNoInstances()
	close(stop)
	wg.Wait()
	e.checkSucceeded(ids...)
	if n := e.jitCalls(); n != 20 {
		t.Errorf("launches = %d, want 20", n)
	}
	count := map[string]int{}
	for name, at := range placed {
		want := []string{"node1", "node2"}
		if pools[name] != "cpu" {
			want = []string{"node3"}
		}
		if !slices.Contains(want, at) {
			t.Errorf("%s (pool %s) placed on %s, want one of %v", name, pools[name], at, want)
		}
		count[at]++
	}
	t.Logf("runners seen per member: %v; at most %d at once on gpu", count, peakGPU)
	if count["node1"] == 0 || count["node2"] == 0 {
		t.Errorf("cpu runners not spread over the group: %v", count)
	}
	if peakGPU > 2 {
		t.Errorf("%d runners at once on group gpu, limit 2", peakGPU)
	}
	e.eventually("no runner records left", time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
	e.checkNoSecrets()
}

// Test 2: a pool whose architecture no member has launches nothing; its
// job stays queued with the reason, in the admin API, the CLI and the
// status page; `validate --check-lxd` says so before start.
func TestClusterArchitectureNoMemberHas(t *testing.T) {
	tc := sharedCluster(t)
	e := newClusterEnv(t, tc, options{extraPool: pool("arm", "self-hosted, arm64", "    architecture: aarch64\n")})
	const why = "no cluster member runs architecture aarch64 (they run x86_64)"
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: []string{"self-hosted", "arm64"}, Repo: "acme/app"})
	var d admin.JobDetail
	e.eventually("the job waiting with its reason", 30*time.Second, func() bool {
		return e.adminTry(fmt.Sprint("/api/jobs/", id), &d) == nil && d.State == "queued" && d.Reason == why
	})
	if !slices.ContainsFunc(d.Events, func(ev admin.Event) bool { return ev.Kind == "waiting" && ev.Detail == why }) {
		t.Errorf("timeline %+v lacks the wait", d.Events)
	}
	var page string
	e.adminGet("/", &page)
	if !strings.Contains(page, why) {
		t.Errorf("the status page does not show why job %d waits", id)
	}
	if out, err := e.cli("jobs", "--state", "queued"); err != nil || !strings.Contains(out, why) {
		t.Errorf("jobs --state queued: %v\n%s", err, out)
	}
	e.waitLog("pool launches nothing")
	time.Sleep(2 * time.Second) // a few more steps
	if n := e.jitCalls(); n != 0 {
		t.Errorf("launches = %d for a job no member can run", n)
	}
	if ins := e.instances(); len(ins) != 0 {
		t.Errorf("instances made: %+v", ins)
	}

	out, err := exec.Command(binPath, "validate", "--config", e.cfgPath, "--check-lxd").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pools[1] (arm): no LXD member can run its instances, so its jobs would stay queued: "+why) ||
		!strings.Contains(string(out), "pool linux: placed on LXD members running x86_64") ||
		!strings.Contains(string(out), "cluster of 3 members") {
		t.Errorf("validate --check-lxd: %v\n%s", err, out)
	}
}

// Test 3: the member the service talks to is lost mid-burst (kill -9 of
// its daemon and its containers, as when its host dies). The service moves
// to the next member's address; every job that had not started on the
// lost member completes on the others; those that ran there are failed by
// GitHub, reported lost, and not run again. When the member is back,
// nothing of ours is left on it after the next reconcile.
func TestClusterMemberLost(t *testing.T) {
	tc := sharedCluster(t)
	e := newClusterEnv(t, tc, options{maxInstances: 6, top: "reconcile_interval: 2s"})
	t.Cleanup(func() {
		m := tc.member("node1")
		m.mu.Lock()
		down := m.cmd == nil
		m.mu.Unlock()
		if down {
			tc.start(t, "node1")
		}
	})
	// Jobs long enough that the six first are all started and running
	// when node1 dies, with six more waiting. No start may be in flight
	// then: node1 holds the cluster's database leader, and LXD fails every
	// container start then in flight, on any member ("The start hook
	// failed ... exec-sql ... EOF"), killing a runner that may already run
	// its job (seen here: a start with a proxy device takes seconds).
	ids := queue(e, 12, selfHosted, 20*time.Second)
	var onNode1 []int64
	e.eventually("jobs running on node1 while others wait, no start in flight", 2*time.Minute, func() bool {
		onNode1 = onNode1[:0]
		for id, at := range e.runningOn() {
			if at == "node1" {
				onNode1 = append(onNode1, id)
			}
		}
		queued := 0
		for _, j := range e.fake.Jobs() {
			if j.Status == ghfake.StatusQueued {
				queued++
			}
		}
		return len(onNode1) > 0 && queued >= 2 && startsInFlight(e) == 0
	})
	killAt := time.Now()
	tc.kill(t, "node1")
	t.Logf("jobs running on node1 when it died: %v", onNode1)

	var rest []int64
	for _, id := range ids {
		if !slices.Contains(onNode1, id) {
			rest = append(rest, id)
		}
	}
	e.waitCompleted(rest...)
	e.checkSucceeded(rest...)
	for _, id := range onNode1 {
		j, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusCompleted })
		if err != nil || j.Conclusion != ghfake.ConclusionFailure {
			t.Errorf("job %d that ran on node1: %v %q, want failed by GitHub", id, err, j.Conclusion)
		}
		var d admin.JobDetail
		e.eventually(fmt.Sprint("job ", id, " reported lost"), 30*time.Second, func() bool {
			return e.adminTry(fmt.Sprint("/api/jobs/", id), &d) == nil && slices.ContainsFunc(d.Events, func(ev admin.Event) bool { return ev.Kind == "runner_lost" })
		})
		if !strings.Contains(d.Reason, "cluster member node1 does not answer") {
			t.Errorf("job %d reason %q", id, d.Reason)
		}
	}

	// How fast: the move to another address, and the first runner that
	// was launched after the loss and started.
	moved := logTimeAfter(e, killAt, "lxd: address does not answer; moving to the next")
	t.Logf("after the kill: moved to another member's address in %v; first runner launched and started after it in %v",
		moved.Sub(killAt).Round(time.Millisecond), firstStartAfter(e, killAt).Sub(killAt).Round(time.Millisecond))
	if moved.IsZero() {
		t.Errorf("the service never moved to another address")
	}

	// Every runner that never ran a job was on node1, or LXD failed its
	// start: node1 held the cluster's database leader, and LXD fails the
	// container starts in flight anywhere when that dies ("The start hook
	// failed ... exec-sql ... EOF"). Nothing else was wasted, and no job
	// ran twice.
	failed := map[string]bool{}
	for _, line := range strings.Split(e.logText(), "\n") {
		var l struct {
			Time              time.Time
			Message, Instance string
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "launch failed; the job stays queued" && l.Time.After(killAt.Add(-time.Second)) {
			failed[l.Instance] = true
		}
	}
	ran := map[string]int64{}
	for _, j := range e.fake.Jobs() {
		if other, ok := ran[j.RunnerName]; ok && j.RunnerName != "" {
			t.Errorf("runner %s ran jobs %d and %d", j.RunnerName, other, j.ID)
		}
		ran[j.RunnerName] = j.ID
	}
	launched := e.launchedOn()
	spare := 0
	for name, member := range launched {
		if _, ok := ran[name]; !ok {
			spare++
			if member != "node1" && !failed[name] {
				t.Errorf("runner %s on %s never ran a job, and its launch did not fail", name, member)
			}
		}
	}
	t.Logf("%d jobs, %d launches (%d never ran a job: on node1, or their start failed with the cluster's database leader; %d launches failed)",
		len(ids), len(launched), spare, len(failed))
	if n := e.jitCalls(); n != len(launched) {
		t.Errorf("registrations = %d, launches logged = %d", n, len(launched))
	}

	backAt := time.Now()
	tc.start(t, "node1")
	e.eventually("nothing of ours left on node1", 2*time.Minute, func() bool {
		for _, in := range e.instances() {
			if in.Location == "node1" {
				return false
			}
		}
		return true
	})
	t.Logf("node1 back: nothing of ours left on it %v after its start", time.Since(backAt).Round(100*time.Millisecond))
	e.waitNoInstances()
	e.eventually("no runner records left", time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
	e.eventually("node1 online for the others", time.Minute, func() bool {
		out, _ := tc.member("node2").lxc("cluster", "list", "--format", "csv")
		return strings.Count(out, ",ONLINE,") == 3
	})
	e.checkNoSecrets()
}

// startsInFlight counts the launches the service's log shows begun and not
// ended.
func startsInFlight(e *env) int {
	n := 0
	for _, line := range strings.Split(e.logText(), "\n") {
		var l struct{ Message string }
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch l.Message {
		case "launching runner":
			n++
		case "runner started", "launch failed; the job stays queued":
			n--
		}
	}
	return n
}

// firstStartAfter returns when the first runner launched after t started.
func firstStartAfter(e *env, after time.Time) time.Time {
	launched := map[string]bool{}
	for _, line := range strings.Split(e.logText(), "\n") {
		var l struct {
			Time              time.Time
			Message, Instance string
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Time.Before(after) {
			continue
		}
		switch l.Message {
		case "launching runner":
			launched[l.Instance] = true
		case "runner started":
			if launched[l.Instance] {
				return l.Time
			}
		}
	}
	return time.Time{}
}

// logTimeAfter returns the time of the first log line after t holding msg.
func logTimeAfter(e *env, after time.Time, msg string) time.Time {
	for _, line := range strings.Split(e.logText(), "\n") {
		var l struct {
			Time    time.Time
			Message string
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == msg && l.Time.After(after) {
			return l.Time
		}
	}
	return time.Time{}
}

// Test 4: an operator drains a member with jobs running on it. Its jobs
// finish, no new runner lands there, the drain says when the member is
// empty, and `lxc cluster evacuate` afterwards stops nothing of ours.
// While evacuated (and no longer drained) the member gets nothing either:
// the service reads the cluster's evacuation.
func TestClusterDrainMember(t *testing.T) {
	tc := sharedCluster(t)
	n1 := tc.member("node1")
	e := newClusterEnv(t, tc, options{maxInstances: 6, top: "reconcile_interval: 2s"})
	t.Cleanup(func() { _, _ = n1.lxc("cluster", "restore", "node2", "--force") })
	ids := queue(e, 6, selfHosted, 10*time.Second)
	var onNode2 []int64
	e.eventually("a job running on node2", 2*time.Minute, func() bool {
		onNode2 = onNode2[:0]
		for id, at := range e.runningOn() {
			if at == "node2" {
				onNode2 = append(onNode2, id)
			}
		}
		return len(onNode2) > 0
	})
	before := map[string]bool{}
	for _, in := range e.instances() {
		if in.Location == "node2" {
			before[in.Name] = true
		}
	}

	// Nothing new on node2 from the drain on.
	var mu sync.Mutex
	var intruders []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	watch := func(allowed map[string]bool) {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, in := range e.instances() {
				if in.Location == "node2" && !allowed[in.Name] {
					mu.Lock()
					if !slices.Contains(intruders, in.Name) {
						intruders = append(intruders, in.Name)
					}
					mu.Unlock()
				}
			}
		}
	}
	drainAt := time.Now()
	ctx, cancel := context.WithTimeout(e.ctx, 3*time.Minute)
	defer cancel()
	drain := exec.CommandContext(ctx, binPath, "drain", "--member", "node2", "--wait", "--admin", strings.TrimPrefix(e.admin, "http://"))
	var drainOut strings.Builder
	drain.Stdout, drain.Stderr = &drainOut, &drainOut
	if err := drain.Start(); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { watch(before) })
	ids = append(ids, queue(e, 6, selfHosted, 3*time.Second)...)
	if err := drain.Wait(); err != nil {
		t.Fatalf("drain --member node2 --wait: %v\n%s", err, drainOut.String())
	}
	t.Logf("drain --member node2 --wait returned after %v:\n%s", time.Since(drainAt).Round(100*time.Millisecond), drainOut.String())
	if !strings.Contains(drainOut.String(), "member node2: drained and empty") {
		t.Errorf("drain did not say the member is empty")
	}
	for _, in := range e.instances() {
		if in.Location == "node2" {
			t.Errorf("%s still on node2 after the drain said it was empty", in.Name)
		}
	}
	e.waitCompleted(onNode2...)
	e.checkSucceeded(onNode2...)

	// The cluster's own evacuation now stops nothing of ours.
	if out, err := n1.lxc("cluster", "evacuate", "node2", "--force"); err != nil {
		t.Fatalf("evacuate: %v", err)
	} else if strings.Contains(out, "Stopping") || strings.Contains(out, "Migrating") {
		t.Errorf("evacuate moved or stopped something:\n%s", out)
	}
	// Evacuated and no longer drained: the service still places nothing
	// there, from the cluster's state.
	if out, err := e.cli("undrain", "--member", "node2"); err != nil || !strings.Contains(out, "not drained") {
		t.Fatalf("undrain: %v\n%s", err, out)
	}
	if out, err := e.cli("members"); err != nil || !strings.Contains(out, "evacuated") {
		t.Errorf("members: %v\n%s", err, out)
	}
	ids = append(ids, queue(e, 4, selfHosted, time.Second)...)
	e.waitCompleted(ids...)
	e.checkSucceeded(ids...)
	close(stop)
	wg.Wait()
	if len(intruders) > 0 {
		t.Errorf("runners placed on node2 while drained or evacuated: %v", intruders)
	}
	if _, err := n1.lxc("cluster", "restore", "node2", "--force"); err != nil {
		t.Errorf("restore: %v", err)
	}
	e.waitNoInstances()
}
