package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
)

// scrape returns the service's metrics as "name{labels}" -> value.
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sum adds the series of a metric whose labels contain every given pair.
func sum(m map[string]float64, name string, labels ...string) float64 {
	var total float64
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(k, l)
		}
		if ok {
			total += v
		}
	}
	return total
}

// After a run on real LXD, the metrics count what happened; the job's
// timeline holds its steps in order; the status page renders in a browser.
func TestObservability(t *testing.T) {
	e := newEnv(t, options{maxInstances: 2})
	const n = 6
	var ids []int64
	for i := 0; i < n; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 300 * time.Millisecond}))
	}
	hosted := e.fake.QueueJob(ghfake.JobSpec{Labels: []string{"ubuntu-latest"}, Repo: "acme/app"})
	e.waitCompleted(ids...)
	e.waitNoInstances()

	const p = "lxd_gha_autoscaler_"
	// LXD deletes an ephemeral instance as soon as its runner exits; the
	// service's own teardown may finish a moment later.
	var m map[string]float64
	e.eventually("teardowns counted", 30*time.Second, func() bool {
		m = e.scrape()
		return sum(m, p+"teardowns_total", `reason="job_done"`) == n
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{p + "jobs_queued_total", []string{`pool="linux"`}, n},
		{p + "jobs_ignored_total", []string{`reason="no_pool"`}, 1},
		{p + "launches_total", []string{`pool="linux"`, `result="ok"`}, n},
		{p + "instance_launch_seconds_count", []string{`pool="linux"`}, n},
		{p + "job_queue_wait_seconds_count", []string{`pool="linux"`}, n},
		{p + "job_run_seconds_count", []string{`pool="linux"`}, n},
		{p + "runner_ready_seconds_count", []string{`pool="linux"`}, n},
		{p + "jobs_completed_total", []string{`conclusion="success"`}, n},
		{p + "teardowns_total", []string{`reason="job_done"`}, n},
		{p + "webhooks_received_total", []string{`result="accepted"`}, 3*n + 1},
		{p + "lxd_operations_total", []string{`op="create"`, `result="ok"`}, n},
		{p + "github_requests_total", []string{`endpoint="/orgs/{org}/actions/runners/generate-jitconfig"`, `status="201"`}, n},
	} {
		if got := sum(m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// The admin API is not on the webhook listener.
	resp, err := http.Get(e.url + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("admin API answered %d on the webhook listener", resp.StatusCode)
	}

	// The timeline, through the CLI as an operator would read it.
	out, err := exec.Command(binPath, "job", strconv.FormatInt(ids[0], 10), "--admin", e.admin, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("job %d: %v\n%s", ids[0], err, out)
	}
	var detail struct {
		Events []struct {
			At   time.Time `json:"at"`
			Kind string    `json:"kind"`
		} `json:"events"`
	}
	if err := json.Unmarshal(out, &detail); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []string{"queued", "accepted", "launched", "in_progress", "completed", "instance_deleted"}
	var kinds []string
	at := map[string]time.Time{}
	for i, ev := range detail.Events {
		kinds = append(kinds, ev.Kind)
		if _, seen := at[ev.Kind]; !seen {
			at[ev.Kind] = ev.At
		}
		if i > 0 && ev.At.Before(detail.Events[i-1].At) {
			t.Fatalf("timeline out of order: %s", out)
		}
	}
	last := -1
	for _, k := range want {
		idx := indexOf(kinds, k, last+1)
		if idx < 0 {
			t.Fatalf("timeline %v lacks %s after position %d", kinds, k, last)
		}
		last = idx
	}
	// The runner launched for the job came online after its launch; it may
	// have taken another job, so its start is not ordered with this one's.
	if idx := indexOf(kinds, "runner_online", indexOf(kinds, "launched", 0)+1); idx < 0 {
		t.Fatalf("timeline %v lacks runner_online after launched", kinds)
	}
	if total := at["instance_deleted"].Sub(at["queued"]); total <= 0 || total > time.Minute {
		t.Fatalf("queued to deleted took %v: implausible", total)
	}
	status, err := exec.Command(binPath, "status", "--admin", e.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(status), "linux") {
		t.Fatalf("status: %v\n%s", err, status)
	}
	t.Logf("status:\n%s", status)

	// The status page in a real browser.
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		fleettest.Missing(t, "chromium not installed (apt-get install chromium): status page not checked in a browser")
	}
	dir := t.TempDir()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir=" + filepath.Join(dir, "profile")}
	dom, err := exec.CommandContext(e.ctx, chromium, append(args, "--dump-dom", e.admin+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	page := string(dom)
	for _, s := range []string{`id="pools"`, "linux", fmt.Sprint(ids[0]), fmt.Sprint(hosted), `class="bar`} {
		if !strings.Contains(page, s) {
			t.Errorf("status page lacks %q", s)
		}
	}
	shot := filepath.Join(os.TempDir(), "lxd-gha-autoscaler-status.png")
	if err := exec.CommandContext(e.ctx, chromium, append(args, "--screenshot="+shot, "--window-size=1200,900", e.admin+"/")...).Run(); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 8)
	if _, err := io.ReadFull(f, head); err != nil || string(head[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	t.Logf("status page screenshot: %s", shot)
}

func indexOf(xs []string, x string, from int) int {
	for i := from; i < len(xs); i++ {
		if xs[i] == x {
			return i
		}
	}
	return -1
}
