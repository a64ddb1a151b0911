package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
)

var selfHosted = []string{"self-hosted", "linux"}

func TestOneJobThroughItsWholeLife(t *testing.T) {
	e := newEnv(t, options{})
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: time.Second})

	// A runner of ours registers and takes the job.
	j, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusInProgress })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(j.RunnerName, e.prefix+"linux-") {
		t.Fatalf("job ran on %q, not one of ours", j.RunnerName)
	}
	if ins := e.instances(); len(ins) != 1 || ins[0].Name != j.RunnerName || ins[0].Labels.Pool != "linux" || ins[0].Labels.JobID != id {
		t.Fatalf("instances = %+v, want exactly %s labelled with pool and job", ins, j.RunnerName)
	}
	var labels []string
	for _, r := range e.fake.Runners() {
		if r.Name == j.RunnerName {
			labels = r.Labels
		}
	}
	if strings.Join(labels, ",") != "self-hosted,linux,x64" {
		t.Fatalf("runner registered with labels %v, want exactly the pool's", labels)
	}

	e.waitCompleted(id)
	e.waitNoInstances()
	if n := e.jitCalls(); n != 1 {
		t.Fatalf("JIT configs = %d, want 1", n)
	}
	if rs := e.fake.Runners(); len(rs) != 0 {
		t.Fatalf("runner records left at GitHub: %+v", rs)
	}
	j, _ = e.fake.Job(id)
	if j.Conclusion != ghfake.ConclusionSuccess {
		t.Fatalf("conclusion = %q", j.Conclusion)
	}
	e.checkNoSecrets()
}

func TestThirtyJobsFourSlots(t *testing.T) {
	e := newEnv(t, options{maxInstances: 4})
	// Sample the instance count all along: the limit must hold at every moment.
	peak := e.peakInstances()
	var ids []int64
	for i := 0; i < 30; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 200 * time.Millisecond}))
	}
	e.waitCompleted(ids...)
	e.waitNoInstances()
	if n := e.jitCalls(); n != 30 {
		t.Fatalf("launches = %d, want exactly 30", n)
	}
	if p := peak(); p > 4 {
		t.Fatalf("peak instances = %d, limit 4", p)
	}
	if rs := e.fake.Runners(); len(rs) != 0 {
		t.Fatalf("runner records left: %d", len(rs))
	}
	e.checkNoSecrets()
}

func TestDuplicateDeliveries(t *testing.T) {
	e := newEnv(t, options{})
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 2 * time.Second})
	var guid string
	err := e.fake.WaitDeliveries(e.ctx, func(ds []ghfake.DeliveryView) bool {
		for _, d := range ds {
			if d.JobID == id && d.Action == "queued" && d.StatusCode == http.StatusAccepted {
				guid = d.GUID
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := e.fake.Redeliver(guid); err != nil {
			t.Fatal(err)
		}
	}
	e.waitCompleted(id)
	e.waitNoInstances()
	if n := e.jitCalls(); n != 1 {
		t.Fatalf("launches = %d for one job delivered four times, want 1", n)
	}
}

func TestCancelledQueuedJob(t *testing.T) {
	e := newEnv(t, options{maxInstances: 1})
	a := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 3 * time.Second})
	if _, err := e.fake.WaitJob(e.ctx, a, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusInProgress }); err != nil {
		t.Fatal(err)
	}
	// B waits for the only slot; it is cancelled while queued.
	b := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: time.Second})
	time.Sleep(300 * time.Millisecond) // let its queued delivery arrive first
	if err := e.fake.CancelJob(b); err != nil {
		t.Fatal(err)
	}
	e.waitCompleted(a, b)
	e.waitNoInstances()
	// Give the scheduler a moment in which a wrong launch for B would show.
	time.Sleep(time.Second)
	if n := e.jitCalls(); n != 1 {
		t.Fatalf("launches = %d, want 1 (none for the cancelled job)", n)
	}
	if len(e.instances()) != 0 {
		t.Fatal("instance launched for a cancelled job")
	}
	if j, _ := e.fake.Job(b); j.Conclusion != ghfake.ConclusionCancelled {
		t.Fatalf("job b conclusion = %q", j.Conclusion)
	}
}

func TestCancelledJobsRunnerIsRemoved(t *testing.T) {
	e := newEnv(t, options{})
	// The runner for C may be launched before C is cancelled: it is then
	// surplus and must go, at LXD and at GitHub.
	c := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 5 * time.Second})
	e.eventually("a runner launched", 30*time.Second, func() bool { return e.jitCalls() == 1 })
	if err := e.fake.CancelJob(c); err != nil {
		t.Fatal(err)
	}
	e.waitCompleted(c)
	e.waitNoInstances()
	e.eventually("no runner records left", 30*time.Second, func() bool { return len(e.fake.Runners()) == 0 })
}

func TestGitHubHostedJobIgnored(t *testing.T) {
	e := newEnv(t, options{})
	hosted := e.fake.QueueJob(ghfake.JobSpec{Labels: []string{"ubuntu-latest"}, Repo: "acme/app"})
	public := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/public", Public: true})
	ours := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 200 * time.Millisecond})
	e.waitCompleted(ours)
	e.waitNoInstances()
	// Deliveries are applied in order, so both earlier jobs were decided.
	if n := e.jitCalls(); n != 1 {
		t.Fatalf("launches = %d, want 1 (GitHub-hosted and public jobs ignored)", n)
	}
	for _, id := range []int64{hosted, public} {
		if j, _ := e.fake.Job(id); j.Status != ghfake.StatusQueued {
			t.Fatalf("job %d is %s", id, j.Status)
		}
	}
}

func TestRejectedWebhooksLaunchNothing(t *testing.T) {
	e := newEnv(t, options{})
	body := []byte(`{"action":"queued","workflow_job":{"id":999,"labels":["self-hosted","linux"]},` +
		`"repository":{"full_name":"acme/app","visibility":"private","private":true},"organization":{"login":"acme"},"installation":{"id":7}}`)
	sign := func(b, key []byte) string {
		m := hmac.New(sha256.New, key)
		m.Write(b)
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	post := func(b []byte, hdr map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/webhook", bytes.NewReader(b))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	std := func(sig string) map[string]string {
		return map[string]string{"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": randHex(8), "X-Hub-Signature-256": sig, "Content-Type": "application/json"}
	}
	big := bytes.Repeat([]byte(" "), 2<<20)
	for _, c := range []struct {
		name string
		code int
		body []byte
		hdr  map[string]string
	}{
		{"bad signature", 401, body, std(sign(body, []byte("wrong")))},
		{"no signature", 401, body, std("")},
		{"too large", 413, big, std(sign(big, e.secret))},
		{"malformed", 400, []byte(`{"action":`), std(sign([]byte(`{"action":`), e.secret))},
	} {
		if got := post(c.body, c.hdr); got != c.code {
			t.Errorf("%s: status %d, want %d", c.name, got, c.code)
		}
	}
	// The service keeps serving, and a real job still runs.
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 200 * time.Millisecond})
	e.waitCompleted(id)
	e.waitNoInstances()
	if n := e.jitCalls(); n != 1 {
		t.Fatalf("launches = %d, want 1", n)
	}
}

func TestRestartDoesNotRelaunch(t *testing.T) {
	e := newEnv(t, options{})
	id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 4 * time.Second})
	if _, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusInProgress }); err != nil {
		t.Fatal(err)
	}
	// Graceful stop leaves the running runner alone.
	e.stop(syscall.SIGTERM)
	if len(e.instances()) != 1 {
		t.Fatal("shutdown touched the running runner")
	}
	e.start()
	// GitHub (or an operator) redelivers the job's queued event after the restart.
	for _, d := range e.fake.Deliveries() {
		if d.JobID == id && d.Action == "queued" {
			if err := e.fake.Redeliver(d.GUID); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.waitCompleted(id)
	e.waitNoInstances()
	if n := e.jitCalls(); n != 1 {
		t.Fatalf("launches = %d, want 1 across the restart", n)
	}
}
