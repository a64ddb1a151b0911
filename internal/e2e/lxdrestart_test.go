package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
)

// The LXD daemon is killed and started again while jobs run. Webhooks are
// still accepted, launches back off and resume, and every job completes on
// exactly one runner. A container that LXD was starting at the kill may not
// survive it; its job then fails at GitHub (the runner lost communication),
// as it would for real: at most the launches in flight (4) may fail so. It kills the machine's LXD daemon, so it runs only
// when asked (CI runs it on its own, after the other tests):
//
//	E2E_LXD_RESTART=1 go test -count=1 -run TestLXDRestart ./internal/e2e
func TestLXDRestart(t *testing.T) {
	if os.Getenv("E2E_LXD_RESTART") != "1" {
		t.Skip("kills the LXD daemon: set E2E_LXD_RESTART=1 to run it (CI does, in a step of its own)")
	}
	e := newEnv(t, options{maxInstances: 4, top: "reconcile_interval: 2s\nredeliver_interval: 1s",
		limits: "  registration_timeout: 20s"})
	var ids []int64
	for i := 0; i < 12; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 2 * time.Second}))
	}
	e.eventually("some jobs running", time.Minute, func() bool {
		for _, j := range e.fake.Jobs() {
			if j.Status == ghfake.StatusInProgress {
				return true
			}
		}
		return false
	})
	killLXD(t)
	// Readiness says LXD is the problem while it is away, and recovers.
	e.eventually("/readyz unready with lxd failing", 30*time.Second, func() bool {
		code, body := e.readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"lxd"`) && !strings.Contains(body, `"lxd":"ok"`)
	})
	startLXD(t)
	e.eventually("/readyz ready again", 60*time.Second, func() bool {
		code, _ := e.readyz()
		return code == http.StatusOK
	})
	e.waitCompleted(ids...)
	e.waitNoInstances()
	e.eventually("no runner records left", 2*time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
	// Each job ran on its own runner: none was launched twice, none ran two jobs.
	seen := map[string]int64{}
	failed := 0
	for _, j := range e.fake.Jobs() {
		if j.Conclusion != ghfake.ConclusionSuccess {
			failed++
			t.Logf("job %d: %s on %s; what the service logged about it:", j.ID, j.Conclusion, j.RunnerName)
			for _, line := range strings.Split(e.logText(), "\n") {
				if strings.Contains(line, j.RunnerName) {
					t.Log("  " + line)
				}
			}
		}
		if j.RunnerName == "" {
			t.Fatalf("job %d completed without a runner", j.ID)
		}
		if other, ok := seen[j.RunnerName]; ok {
			t.Fatalf("runner %s ran jobs %d and %d", j.RunnerName, other, j.ID)
		}
		seen[j.RunnerName] = j.ID
	}
	if failed > 4 {
		t.Fatalf("%d jobs failed; only the launches in flight at the kill may", failed)
	}
	e.checkNoSecrets()
}

// killLXD kills the daemon; running containers survive it.
func killLXD(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("pkill", "-9", "-x", "lxd").CombinedOutput(); err != nil {
		t.Fatalf("kill lxd: %v %s", err, out)
	}
	t.Log("LXD daemon killed")
}

// startLXD starts the daemon again as .ci/setup-lxd.sh does.
func startLXD(t *testing.T) {
	t.Helper()
	start := exec.Command("setsid", "nohup", "lxd", "--group", "root")
	// Not the test's directory: the daemon outlives it, and its children
	// (rsync for snapshots) fail once their inherited cwd is deleted.
	start.Dir = "/"
	logf, err := os.OpenFile("/var/log/lxd-manual.log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	start.Stdout, start.Stderr = logf, logf
	if err := start.Start(); err != nil {
		t.Fatalf("start lxd: %v", err)
	}
	go func() { _ = start.Wait() }()
	if out, err := exec.Command("lxd", "waitready", "--timeout", "120").CombinedOutput(); err != nil {
		t.Fatalf("lxd waitready: %v %s", err, out)
	}
	t.Log("LXD daemon back")
}

func (e *env) readyz() (int, string) {
	resp, err := http.Get(e.url + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
